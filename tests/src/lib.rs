//! Harness for the end-to-end tests: real binaries, real TLS, real sled, and (as root)
//! network namespaces.

pub mod cluster;
pub mod grpc;
pub mod netns;

/// What a plan of servers alone lacks to be complete (WORKFLOW.md stage `plan`): a jump host
/// and one app file of the package on every server. Append it to a test plan whose servers
/// each have an app with ports, whose clusters have VIPs and (two or more servers) paths.
pub const PLAN_COMPLETION: &str = "\n[jump_host]\naddress = \"10.8.3.25\"\nkind = \"windows\"\n\n[[packages]]\npath = \"/opt/deploy/app.tar.gz\"\nsize = 4\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nkind = \"app\"\n";

/// A complete plan of one server (`app-1`, role `app`, port 8080) at `address`, for tests that
/// move a batch past the `plan` stage without sweeping it.
pub fn complete_plan(address: &str) -> String {
    format!(
        "[[servers]]\naddress = \"{address}\"\nhostname = \"app-1\"\nrole = \"app\"\napps = [{{ name = \"app\", ports = \"8080\" }}]\n{PLAN_COMPLETION}"
    )
}
