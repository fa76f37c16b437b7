//! Bad plans: every class of error names the file, the line (and column) and the field, and
//! says how to fix it; all errors of a file are reported, not only the first.

use preflight_core::plan::{InvalidPlan, Plan, PlanErrorKind};

/// Two valid servers every case builds on (lines 1 to 11).
const BASE: &str = r#"[[servers]]
address = "10.0.0.1"
hostname = "web-01"
role = "nginx"
apps = [{ name = "nginx", ports = "80,443" }]

[[servers]]
address = "10.0.0.2"
hostname = "soa-01"
role = "soa"
apps = [{ name = "gw", ports = "8080" }]
"#;

const FILE: &str = "plan.toml";

fn errors_of(text: &str) -> InvalidPlan {
    match Plan::from_toml(FILE, text) {
        Ok(_) => panic!("plan was accepted:\n{text}"),
        Err(e) => e,
    }
}

/// Appends `extra` to [`BASE`]; the line of `extra` marked `#<` is where the error must be.
/// Checks that some error has that line, that field, and a message containing `msg`, and that
/// its display reads `plan.toml:LINE:COL: field FIELD: ...`.
fn check(name: &str, extra: &str, field: &str, msg: &str) {
    let text = format!("{BASE}{extra}");
    let line = text
        .lines()
        .position(|l| l.contains("#<"))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("case {name}: no #< marker"));
    let err = errors_of(&text);
    let found = err.errors.iter().find(|e| {
        e.location.line as usize == line && e.field == field && e.kind.to_string().contains(msg)
    });
    let Some(e) = found else {
        panic!("case {name}: want line {line}, field {field:?}, message containing {msg:?}; got:\n{err}");
    };
    assert_eq!(e.location.file, FILE);
    assert!(e.location.column >= 1);
    let shown = e.to_string();
    let prefix = if field.is_empty() {
        format!("{FILE}:{line}:{}: ", e.location.column)
    } else {
        format!("{FILE}:{line}:{}: field {field}: ", e.location.column)
    };
    assert!(
        shown.starts_with(&prefix),
        "case {name}: {shown:?} should start with {prefix:?}"
    );
}

fn server(address: &str, hostname: &str, role: &str, tail: &str) -> String {
    format!("\n[[servers]]\naddress = \"{address}\"\nhostname = \"{hostname}\"\nrole = \"{role}\"\n{tail}")
}

#[test]
fn unknown_role_in_a_path() {
    check(
        "unknown role",
        "\n[[paths]]\nfrom = { role = \"ngnix\" } #<\nto = { role = \"soa\" }\nports = \"8080\"\n",
        "paths[0].from.role",
        "unknown role \"ngnix\": no server has it; roles in this plan: nginx, soa",
    );
    check(
        "unknown role in a vip",
        "\n[[vips]]\naddress = \"10.0.0.100\"\nrole = \"web\" #<\n",
        "vips[0].role",
        "unknown role \"web\"",
    );
    check(
        "unknown role for a package",
        "\n[[packages]]\npath = \"/opt/a.tgz\"\nsize = 1\nsha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"\nkind = \"app\"\non = { role = \"db\" } #<\n",
        "packages[0].on.role",
        "unknown role \"db\"",
    );
}

#[test]
fn unknown_server_references() {
    check(
        "path to unknown server",
        "\n[[paths]]\nfrom = { role = \"nginx\" }\nto = { server = \"soa-09\" } #<\nports = \"8080\"\n",
        "paths[0].to.server",
        "unknown server \"soa-09\"",
    );
    check(
        "bandwidth from unknown address",
        "\n[[bandwidth]]\nfrom = \"10.0.0.9\" #<\nto = \"soa-01\"\n",
        "bandwidth[0].from",
        "unknown server \"10.0.0.9\"",
    );
    check(
        "vip member unknown",
        "\n[[vips]]\naddress = \"10.0.0.100\"\nservers = [\"soa-01\", \"soa-02\"] #<\n",
        "vips[0].servers[1]",
        "unknown server \"soa-02\"",
    );
}

#[test]
fn duplicate_address_and_hostname() {
    check(
        "duplicate address",
        &server("10.0.0.2 #<", "soa-02", "soa", "").replace(" #<\"", "\" #<"),
        "servers[2].address",
        "duplicate address 10.0.0.2: already used at plan.toml:8:11",
    );
    check(
        "duplicate hostname, other case",
        &server("10.0.0.3", "SOA-01 #<", "soa", "").replace(" #<\"", "\" #<"),
        "servers[2].hostname",
        "duplicate hostname \"SOA-01\": already used at plan.toml:9:12",
    );
}

#[test]
fn ports_out_of_range_reversed_or_malformed() {
    let app = |ports: &str| {
        server(
            "10.0.0.3",
            "db-01",
            "db",
            &format!("apps = [{{ name = \"pg\", ports = {ports} }}] #<\n"),
        )
    };
    let f = "servers[2].apps[0].ports";
    check(
        "port 0",
        &app("\"0\""),
        f,
        "port 0 is out of range: use 1 to 65535",
    );
    check(
        "port 65536 in array",
        &app("[65536]"),
        f,
        "port 65536 is out of range",
    );
    check(
        "port 70000 in range",
        &app("\"5432,70000\""),
        f,
        "port 70000 is out of range",
    );
    check("negative port", &app("[-1]"), f, "port -1 is out of range");
    check(
        "reversed range",
        &app("\"5440-5432\""),
        f,
        "reversed port range 5440-5432: write the lower port first (5432-5440)",
    );
    check("not a number", &app("\"pg\""), f, "invalid port \"pg\"");
    check(
        "wrong type",
        &app("true"),
        f,
        "ports as \"80,443,8080-8090\"",
    );
    check(
        "path port 0",
        "\n[[paths]]\nfrom = { role = \"nginx\" }\nto = { role = \"soa\" }\nports = \"0\" #<\n",
        "paths[0].ports",
        "port 0 is out of range",
    );
    check(
        "management ssh port",
        "\n[management]\nssh_port = 0 #<\n",
        "management.ssh_port",
        "port 0 is out of range",
    );
}

#[test]
fn same_port_planned_by_two_apps() {
    check(
        "duplicate port",
        &server(
            "10.0.0.3",
            "db-01",
            "db",
            "apps = [{ name = \"pg\", ports = \"5432\" }, { name = \"pgbouncer\", ports = \"6432,5432\" }] #<\n",
        ),
        "servers[2].apps[1].ports",
        "port 5432/tcp is already planned on this server by app \"pg\"",
    );
}

#[test]
fn bad_cidr() {
    let m = |v: &str| format!("\n[management]\nsources = [\"10.8.0.0/16\", \"{v}\"] #<\n");
    let f = "management.sources[1]";
    check(
        "host bits",
        &m("10.20.0.5/24"),
        f,
        "host bits are set: write the network 10.20.0.0/24",
    );
    check(
        "garbage",
        &m("10.20.0/24"),
        f,
        "invalid CIDR \"10.20.0/24\"",
    );
    check("prefix too long", &m("10.20.0.0/33"), f, "invalid CIDR");
    check(
        "everyone",
        &m("0.0.0.0/0"),
        f,
        "lets every address reach SSH",
    );
}

fn package(fields: &str) -> String {
    format!("\n[[packages]]\npath = \"/data/backup/portal.dump\"\nsize = 1024\n{fields}")
}

const GOOD_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn hash_not_64_hex_digits() {
    check(
        "short hash",
        &package("sha256 = \"e3b0c442\" #<\nkind = \"app\"\n"),
        "packages[0].sha256",
        "invalid sha256 \"e3b0c442\": write the 64 hex digits printed by `sha256sum FILE`",
    );
    let not_hex = GOOD_SHA.replace('e', "g");
    check(
        "64 chars, not hex",
        &package(&format!("sha256 = \"{not_hex}\" #<\nkind = \"app\"\n")),
        "packages[0].sha256",
        "invalid sha256",
    );
    let long = format!("{GOOD_SHA}00");
    check(
        "66 digits",
        &package(&format!("sha256 = \"{long}\" #<\nkind = \"app\"\n")),
        "packages[0].sha256",
        "invalid sha256",
    );
}

#[test]
fn backup_fields() {
    // The missing-field errors point at the [[packages]] header of the entry.
    let no_db = format!("\n[[packages]] #<\npath = \"/b.dump\"\nsize = 1\nsha256 = \"{GOOD_SHA}\"\nkind = \"db_backup\"\non_exists = \"rename\"\n");
    check(
        "backup without database",
        &no_db,
        "packages[0].database",
        "add database = \"NAME\"",
    );
    let no_decision = format!("\n[[packages]] #<\npath = \"/b.dump\"\nsize = 1\nsha256 = \"{GOOD_SHA}\"\nkind = \"db_backup\"\ndatabase = \"portal\"\n");
    check(
        "backup without on_exists",
        &no_decision,
        "packages[0].on_exists",
        "add on_exists = \"overwrite\" or \"rename\"",
    );
    check(
        "database on an app file",
        &package(&format!(
            "sha256 = \"{GOOD_SHA}\"\nkind = \"app\"\ndatabase = \"portal\" #<\n"
        )),
        "packages[0].database",
        "database is only for kind = \"db_backup\"",
    );
    check(
        "bad on_exists value",
        &package(&format!("sha256 = \"{GOOD_SHA}\"\nkind = \"db_backup\"\ndatabase = \"portal\"\non_exists = \"drop\" #<\n")),
        "packages[0].on_exists",
        "unknown variant `drop`, expected `overwrite` or `rename`",
    );
    check(
        "bad database name",
        &package(&format!("sha256 = \"{GOOD_SHA}\"\nkind = \"db_backup\"\ndatabase = \"portal; drop\" #<\non_exists = \"rename\"\n")),
        "packages[0].database",
        "invalid name \"portal; drop\"",
    );
    check(
        "relative package path",
        &format!("\n[[packages]]\npath = \"backup/portal.dump\" #<\nsize = 1\nsha256 = \"{GOOD_SHA}\"\nkind = \"app\"\n"),
        "packages[0].path",
        "write an absolute path",
    );
}

#[test]
fn thresholds_out_of_range() {
    check(
        "zero cores",
        "\n[thresholds]\nmin_cores = 0 #<\n",
        "thresholds.min_cores",
        "min_cores = 0 is out of range: use 1 to 4096",
    );
    check(
        "skew of hours",
        "\n[thresholds]\nmax_clock_skew_ms = 36000000 #<\n",
        "thresholds.max_clock_skew_ms",
        "out of range: use 1 to 60000",
    );
    check(
        "role override out of range",
        "\n[thresholds]\nmin_cores = 8\n[thresholds.roles.soa]\nmin_memory_mib = 1 #<\n",
        "thresholds.roles.soa.min_memory_mib",
        "min_memory_mib = 1 is out of range: use 64 to",
    );
    check(
        "role override for an unknown role",
        "\n[thresholds.roles.database] #<\nmin_cores = 8\n",
        "thresholds.roles.database",
        "unknown role \"database\"",
    );
    check(
        "negative iops",
        "\n[thresholds]\nmin_randread_iops = -5 #<\n",
        "thresholds.min_randread_iops",
        "invalid value: integer `-5`",
    );
}

#[test]
fn unknown_fields_and_sections() {
    check(
        "typo in a server",
        &server("10.0.0.3", "db-01", "db", "adress = \"x\" #<\n"),
        "servers[2].adress",
        "unknown field `adress`, expected one of `address`",
    );
    check(
        "typo in thresholds",
        "\n[thresholds]\nmin_core = 4 #<\n",
        "thresholds.min_core",
        "unknown field `min_core`",
    );
    check(
        "typo in an app",
        &server(
            "10.0.0.3",
            "db-01",
            "db",
            "apps = [{ name = \"pg\", port = \"5432\" }] #<\n",
        ),
        "servers[2].apps[0].port",
        "unknown field `port`, expected one of `name`, `protocol`, `ports`",
    );
    check(
        "unknown section",
        "\n[server] #<\naddress = \"10.0.0.3\"\n",
        "",
        "unknown section \"server\"",
    );
    check(
        "missing hostname",
        "\n[[servers]] #<\naddress = \"10.0.0.3\"\nrole = \"db\"\n",
        "servers[2].hostname",
        "missing field `hostname`",
    );
    check(
        "address of the wrong type",
        "\n[[servers]]\naddress = 10 #<\nhostname = \"db-01\"\nrole = \"db\"\n",
        "servers[2].address",
        "invalid type: integer `10`, expected a string",
    );
    check(
        "unknown jump host kind",
        "\n[management]\nsources = []\n[jump_host]\naddress = \"10.8.0.1\"\nkind = \"mac\" #<\n",
        "jump_host.kind",
        "unknown variant `mac`, expected `windows` or `linux_desktop`",
    );
}

#[test]
fn invalid_values() {
    check(
        "address out of range",
        &server("10.0.0.300 #<", "db-01", "db", "").replace(" #<\"", "\" #<"),
        "servers[2].address",
        "invalid IP address \"10.0.0.300\"",
    );
    check(
        "unspecified address",
        &server("0.0.0.0 #<", "db-01", "db", "").replace(" #<\"", "\" #<"),
        "servers[2].address",
        "invalid IP address \"0.0.0.0\"",
    );
    check(
        "underscore in hostname",
        &server("10.0.0.3", "db_01 #<", "db", "").replace(" #<\"", "\" #<"),
        "servers[2].hostname",
        "invalid hostname \"db_01\"",
    );
    check(
        "role with a space",
        &server("10.0.0.3", "db-01", "data base #<", "").replace(" #<\"", "\" #<"),
        "servers[2].role",
        "invalid name \"data base\"",
    );
    check(
        "relative data dir",
        &server("10.0.0.3", "db-01", "db", "data_dirs = [\"data/pg\"] #<\n"),
        "servers[2].data_dirs[0]",
        "write an absolute path starting with '/'",
    );
    check(
        "dot-dot data dir",
        &server(
            "10.0.0.3",
            "db-01",
            "db",
            "data_dirs = [\"/data/../etc\"] #<\n",
        ),
        "servers[2].data_dirs[0]",
        "remove '.' and '..' components",
    );
    check(
        "vip on a server address",
        "\n[[vips]]\naddress = \"10.0.0.2\" #<\nrole = \"soa\"\n",
        "vips[0].address",
        "virtual IP 10.0.0.2 is also the address of server \"soa-01\"",
    );
    // Issue 20 item 2: a plan may not make the agents probe addresses outside the batch's
    // own networks, nor more ports or VIPs than a deployment needs.
    check(
        "vip outside the batch's networks",
        "\n[[vips]]\naddress = \"8.8.8.8\" #<\nrole = \"soa\"\n",
        "vips[0].address",
        "virtual IP 8.8.8.8 is outside the batch's networks (10.0.0.0/24)",
    );
    check(
        "vip with a port range",
        "\n[[vips]]\naddress = \"10.0.0.100\"\nrole = \"soa\"\nports = \"1-1024\" #<\n",
        "vips[0].ports",
        "too many ports on one virtual IP (1024): at most 32",
    );
    check(
        "vip with servers and role",
        "\n[[vips]] #<\naddress = \"10.0.0.100\"\nrole = \"soa\"\nservers = [\"soa-01\"]\n",
        "vips[0]",
        "set exactly one of servers",
    );
    check(
        "endpoint with role and server",
        "\n[[paths]]\nfrom = { role = \"nginx\", server = \"web-01\" } #<\nto = { role = \"soa\" }\nports = \"8080\"\n",
        "paths[0].from",
        "set exactly one of role",
    );
    check(
        "bandwidth to itself",
        "\n[[bandwidth]] #<\nfrom = \"web-01\"\nto = \"10.0.0.1\"\n",
        "bandwidth[0]",
        "\"web-01\" is both source and destination",
    );
    // Issue 13 item 12: the bandwidth receiver listens on a planned port, never an ephemeral
    // one: the pair's `port`, else one a required path opens between the two servers.
    check(
        "bandwidth pair with no port and no path",
        "\n[[bandwidth]] #<\nfrom = \"web-01\"\nto = \"soa-01\"\n",
        "bandwidth[0]",
        "no port for the bandwidth test from web-01 to soa-01: no required TCP path opens a port from web-01 to soa-01; add port = N",
    );
    check(
        "bandwidth port out of range",
        "\n[[bandwidth]]\nfrom = \"web-01\"\nto = \"soa-01\"\nport = 70000 #<\n",
        "bandwidth[0].port",
        "70000",
    );
    let long = "x".repeat(300);
    check(
        "project name too long",
        &format!("\n[batch]\nproject = \"{long}\" #<\n"),
        "batch.project",
        "value is 300 bytes long: at most 256",
    );
}

#[test]
fn toml_syntax_errors_are_located() {
    check(
        "unquoted address",
        "\n[[servers]]\naddress = 10.0.0.3 #<\n",
        "",
        "toml syntax",
    );
    let err = errors_of("[[servers]\naddress = \"a\"\n");
    assert_eq!(err.errors[0].location.line, 1);
    assert!(matches!(err.errors[0].kind, PlanErrorKind::Syntax(_)));
}

#[test]
fn caps_on_servers_and_ports() {
    let mut text = String::new();
    for i in 0..501u32 {
        text.push_str(&format!(
            "[[servers]]\naddress = \"10.1.{}.{}\"\nhostname = \"h{i}\"\nrole = \"r\"\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let err = errors_of(&text);
    let e = err
        .errors
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                PlanErrorKind::TooMany {
                    what: "servers",
                    ..
                }
            )
        })
        .unwrap_or_else(|| panic!("no cap error:\n{err}"));
    assert_eq!(e.field, "servers[500].address");
    assert_eq!(e.location.line, 500 * 4 + 2);

    check(
        "too many ports",
        &server(
            "10.0.0.3",
            "db-01",
            "db",
            "apps = [{ name = \"x\", ports = \"1000-2100\" }] #<\n",
        ),
        "servers[2].apps[0].ports",
        "too many ports on one server (1101): at most 1024",
    );
    check(
        "too many ports on a virtual IP",
        "\n[[vips]]\naddress = \"10.0.0.100\"\nrole = \"soa\"\nports = \"1-65535\" #<\n",
        "vips[0].ports",
        "too many ports on one virtual IP (65535): at most 32",
    );
}

#[test]
fn every_error_is_reported_in_file_order() {
    let text = format!(
        "{BASE}{}{}{}\n[thresholds]\nmin_cores = 0\n\n[[paths]]\nfrom = {{ role = \"ngnix\" }}\nto = {{ role = \"soa\" }}\nports = \"8080\"\n",
        server("10.0.0.1", "db-01", "db", "apps = [{ name = \"pg\", ports = \"0\" }]\n"),
        server("10.0.0.4", "web-01", "db", ""),
        package("sha256 = \"xyz\"\nkind = \"db_backup\"\n"),
    );
    let err = errors_of(&text);
    let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
    for want in [
        "servers[2].address",
        "servers[2].apps[0].ports",
        "servers[3].hostname",
        "packages[0].database",
        "packages[0].on_exists",
        "packages[0].sha256",
        "thresholds.min_cores",
        "paths[0].from.role",
    ] {
        assert!(fields.contains(&want), "missing {want} in:\n{err}");
    }
    let lines: Vec<u32> = err.errors.iter().map(|e| e.location.line).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted, "errors are in file order:\n{err}");
    assert_eq!(err.to_string().lines().count(), err.errors.len());
}

#[test]
fn too_many_errors_are_capped() {
    let mut text = String::new();
    for i in 0..400u32 {
        text.push_str(&format!(
            "[[servers]]\naddress = \"bad{i}\"\nhostname = \"h{i}\"\nrole = \"r\"\n"
        ));
    }
    let err = errors_of(&text);
    assert_eq!(err.errors.len(), preflight_core::plan::MAX_ERRORS + 1);
    assert!(matches!(
        err.errors.last().map(|e| &e.kind),
        Some(PlanErrorKind::TooManyErrors(_))
    ));
}

#[test]
fn expansion_of_paths_is_capped() {
    let mut text = String::new();
    for i in 0..500u32 {
        let role = if i < 300 { "a" } else { "b" };
        text.push_str(&format!(
            "[[servers]]\naddress = \"10.3.{}.{}\"\nhostname = \"h{i}\"\nrole = \"{role}\"\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let path = |ports: &str| {
        format!("\n[[paths]]\nfrom = {{ role = \"a\" }}\nto = {{ role = \"b\" }}\nports = \"{ports}\"\n")
    };
    // 300 x 200 x 3 = 180 000 triples: accepted, and expanded exactly.
    let ok = format!("{text}{}", path("1-3"));
    let plan = Plan::from_toml(FILE, &ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.expanded_paths().len(), 180_000);
    // 300 x 200 x 4 = 240 000: refused at the path, naming the cap.
    let too_many = format!("{text}{}", path("1-4"));
    let err = errors_of(&too_many);
    let e = &err.errors[0];
    assert_eq!((e.location.line, e.field.as_str()), (2002, "paths[0]"));
    assert!(
        e.kind
            .to_string()
            .contains("too many expanded (from, to, port) paths (240000): at most 200000"),
        "{err}"
    );
}

/// Issue 13 item 12: a bandwidth pair without `port` takes the lowest port a required TCP path
/// opens from its sender to its receiver; an explicit `port` wins. Both survive canonical TOML.
#[test]
fn bandwidth_port_defaults_to_a_planned_path_port() {
    let text = format!(
        "{BASE}\n[[paths]]\nfrom = {{ role = \"nginx\" }}\nto = {{ role = \"soa\" }}\nports = \"8443,8080\"\n\n[[bandwidth]]\nfrom = \"web-01\"\nto = \"soa-01\"\n\n[[bandwidth]]\nfrom = \"soa-01\"\nto = \"web-01\"\nport = 5201\n"
    );
    let plan = Plan::from_toml(FILE, &text).unwrap();
    assert_eq!(plan.bandwidth[0].port, 8080);
    assert_eq!(plan.bandwidth[1].port, 5201);
    let again = Plan::from_toml("canonical", &plan.to_toml()).unwrap();
    assert_eq!(again, plan);
}

#[test]
fn a_path_end_written_as_a_string_says_how_to_write_it() {
    let text = format!(
        "{BASE}\n[[paths]]\nfrom = \"nginx\"\nto = {{ role = \"soa\" }}\nports = \"8080\"\n"
    );
    let err = errors_of(&text).to_string();
    assert!(
        err.contains(r#"write { role = "nginx" } or { server = "web-01" }"#),
        "{err}"
    );
    assert!(
        !err.contains("RawEndpoint"),
        "no internal type names: {err}"
    );
}
