//! CSV server lists as exported from the planning spreadsheet: good exports in their usual
//! variants, and malformed ones with errors naming the file, line, column and column name.

use preflight_core::net::Proto;
use preflight_core::plan::{InvalidPlan, Plan, PlanErrorKind};

const FILE: &str = "servers.csv";

fn ok(text: &str) -> Plan {
    Plan::from_csv(FILE, text).unwrap_or_else(|e| panic!("rejected:\n{e}"))
}

fn bad(text: &str) -> InvalidPlan {
    match Plan::from_csv(FILE, text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

/// Asserts an error at `line:column` for `field` whose message contains `msg`.
fn has(err: &InvalidPlan, line: u32, column: Option<u32>, field: &str, msg: &str) {
    let found = err.errors.iter().any(|e| {
        e.location.file == FILE
            && e.location.line == line
            && column.is_none_or(|c| e.location.column == c)
            && e.field == field
            && e.kind.to_string().contains(msg)
    });
    assert!(
        found,
        "want {FILE}:{line}:{column:?} field {field:?} containing {msg:?}; got:\n{err}"
    );
}

#[test]
fn spreadsheet_variants_parse() {
    // Byte order mark, ';' delimiter, Chinese headers in another order, a notes column, blank
    // and comment rows, a UDP port group.
    let text = "\u{feff}主机名;IP地址;角色;应用;端口;备注\n\
                dns-01;10.0.0.53;dns;unbound;53/udp;primary\n\
                ;;;;;\n\
                # reserve: dns-02\n\
                web-01;10.0.0.80;nginx;;\"80,443\";\n";
    let plan = ok(text);
    assert_eq!(plan.servers.len(), 2);
    let dns = &plan.servers[0];
    assert_eq!(dns.hostname, "dns-01");
    assert_eq!(dns.apps[0].name, "unbound");
    assert_eq!(dns.apps[0].protocol, Proto::Udp);
    assert_eq!(dns.planned_ports()[0].port, 53);
    let web = &plan.servers[1];
    // No apps cell: the ports belong to one app named after the role.
    assert_eq!(web.apps.len(), 1);
    assert_eq!(web.apps[0].name, "nginx");
    assert_eq!(web.planned_ports().len(), 2);
}

#[test]
fn missing_required_column() {
    let err = bad("IP,Role,Apps,Ports\n10.0.0.1,web,nginx,80\n");
    has(
        &err,
        1,
        Some(1),
        "hostname",
        "missing column \"hostname\" in the header row",
    );
    assert_eq!(err.errors.len(), 1);
    let err = bad("");
    has(&err, 1, Some(1), "ip", "missing column \"ip\"");
}

#[test]
fn duplicate_column() {
    let err = bad("ip,hostname,role,address\n10.0.0.1,a,r,10.0.0.2\n");
    has(&err, 1, Some(18), "ip", "column \"address\" appears twice");
}

#[test]
fn bad_ip_names_line_and_column() {
    let err = bad("hostname,ip,role\nweb-01,10.0.0.1,web\nweb-02,10.0.0.256,web\n");
    has(&err, 3, Some(8), "ip", "invalid IP address \"10.0.0.256\"");
}

#[test]
fn swapped_columns_are_caught() {
    let err = bad("ip,hostname,role\nweb-01,10.0.0.1,web\n");
    has(&err, 2, Some(1), "ip", "invalid IP address \"web-01\"");
    has(
        &err,
        2,
        Some(8),
        "hostname",
        "invalid hostname \"10.0.0.1\"",
    );
}

#[test]
fn wrong_field_count_names_the_line() {
    let err =
        bad("ip,hostname,role\n10.0.0.1,a,web\n10.0.0.2,b\n10.0.0.3,c,web,extra\n10.0.0.4,d,web\n");
    has(
        &err,
        3,
        Some(1),
        "",
        "row has 2 fields but the header has 3",
    );
    has(
        &err,
        4,
        Some(1),
        "",
        "row has 4 fields but the header has 3",
    );
    assert_eq!(err.errors.len(), 2, "{err}");
}

#[test]
fn bad_ports_and_apps_ports_mismatch() {
    let err = bad("ip,hostname,role,apps,ports\n10.0.0.1,a,web,nginx,\"80,0\"\n");
    has(&err, 2, None, "ports", "port 0 is out of range");
    let err = bad("ip,hostname,role,apps,ports\n10.0.0.1,a,web,nginx;exporter,\"80,443\"\n");
    has(&err, 2, None, "ports", "2 apps but 1 port groups");
    let err = bad("ip,hostname,role,apps,ports\n10.0.0.1,a,web,nginx,90-80\n");
    has(&err, 2, Some(22), "ports", "reversed port range 90-80");
    // Quoted fields before it do not shift the column: it points at the content.
    let err = bad("ip,hostname,role,apps,ports\n10.0.0.1,a,web,\"nginx;x\",\"80;90-80\"\n");
    has(&err, 2, Some(27), "ports", "reversed port range 90-80");
    let err = bad("\u{feff}ip;hostname;role\n10.0.0.1;\"b\";web\n10.0.0.2;é-1;web\n");
    has(&err, 3, Some(10), "hostname", "invalid hostname \"é-1\"");
}

#[test]
fn duplicates_across_rows() {
    let err = bad("ip,hostname,role\n10.0.0.1,a,web\n10.0.0.1,b,web\n10.0.0.2,A,web\n");
    has(
        &err,
        3,
        Some(1),
        "ip",
        "duplicate address 10.0.0.1: already used at servers.csv:2:1",
    );
    has(
        &err,
        4,
        Some(10),
        "hostname",
        "duplicate hostname \"A\": already used at servers.csv:2:10",
    );
}

#[test]
fn header_only_has_no_servers() {
    let err = bad("ip,hostname,role\n");
    assert!(
        matches!(err.errors[0].kind, PlanErrorKind::NoServers),
        "{err}"
    );
}

#[test]
fn too_many_rows() {
    let mut text = String::from("ip,hostname,role\n");
    for i in 0..501u32 {
        text.push_str(&format!("10.2.{}.{},h{i},r\n", i / 250, i % 250 + 1));
    }
    let err = bad(&text);
    has(
        &err,
        502,
        Some(1),
        "",
        "too many servers (501): at most 500",
    );
}

#[test]
fn merged_with_a_toml_plan_errors_name_both_files() {
    let toml = "[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"lb-01\"\nrole = \"lb\"\n\n\
                [[paths]]\nfrom = { role = \"lb\" }\nto = { role = \"webb\" }\nports = \"80\"\n";
    let csv = "ip,hostname,role\n10.0.0.1,web-01,web\n";
    let err = Plan::from_toml_with_csv_servers("plan.toml", toml, FILE, csv).expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains(
            "servers.csv:2:1: field ip: duplicate address 10.0.0.1: already used at plan.toml:2:11"
        ),
        "{text}"
    );
    assert!(
        text.contains("plan.toml:8:15: field paths[0].to.role: unknown role \"webb\": no server has it; roles in this plan: lb, web"),
        "{text}"
    );
    // Fixed, the path from the TOML reaches the CSV's servers.
    let csv = "ip,hostname,role\n10.0.0.2,web-01,webb\n";
    let plan = Plan::from_toml_with_csv_servers("plan.toml", toml, FILE, csv)
        .unwrap_or_else(|e| panic!("{e}"));
    let paths = plan.expanded_paths();
    assert_eq!(paths.len(), 1);
    assert_eq!(
        (
            paths[0].from.hostname.as_str(),
            paths[0].to.hostname.as_str(),
            paths[0].port
        ),
        ("lb-01", "web-01", 80)
    );
}

#[test]
fn servers_as_a_single_table_is_explained() {
    let err =
        Plan::from_toml("plan.toml", "[servers]\naddress = \"10.0.0.1\"\n").expect_err("invalid");
    let e = &err.errors[0];
    assert_eq!((e.location.line, e.field.as_str()), (1, "servers"));
    assert!(
        e.kind
            .to_string()
            .contains("write [[servers]] before each entry"),
        "{err}"
    );
}
