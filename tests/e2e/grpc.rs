//! A real gRPC client and server (Python grpcio, the standard health service)
//! through client -> outbound -> mTLS -> inbound -> server: HTTP/2 end to end,
//! `te: trailers`, grpc-status in trailers, and the caller's identity as
//! metadata. Skipped with a printed reason when grpcio is not installed
//! (`.ci/run` installs it).

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::*;

const SERVER: &str = r#"
import sys, grpc
from concurrent import futures
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

class Health(health.HealthServicer):
    def Check(self, request, context):
        peer = dict(context.invocation_metadata()).get(sys.argv[2], "")
        context.set_trailing_metadata((("x-seen-peer", peer),))
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"#;

const CLIENT: &str = r#"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as ch:
    stub = health_pb2_grpc.HealthStub(ch)
    for _ in range(20):
        resp, call = stub.Check.with_call(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, resp
    print("status", resp.status, "peer", dict(call.trailing_metadata()).get("x-seen-peer"), flush=True)
"#;

fn grpcio_available() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1.health"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills the Python server by PID when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_grpc_client_and_server_talk_through_the_mesh() {
    if !grpcio_available() {
        eprintln!("SKIP grpc test: python3 grpcio / grpcio-health-checking not installed");
        return;
    }
    let app_port = free_port();
    let mut server = Child(
        Command::new("python3")
            .args(["-c", SERVER, &app_port.to_string(), IDENTITY_HEADER])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start grpc server"),
    );
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = server.0.stdout.take().expect("stdout");
        std::io::BufReader::new(out).read_line(&mut line).expect("server output");
    }
    assert_eq!(line.trim(), "ready");

    let pki = Pki::new();
    let app: std::net::SocketAddr = ([127, 0, 0, 1], app_port).into();
    let (server_proxy, inbound) = pki.inbound_sidecar(app, "strict", "");
    let (client_proxy, outbound) = pki.outbound_sidecar(inbound, SERVER_ID, "");
    let start = Instant::now();
    let out =
        Command::new("timeout").args(["60", "python3", "-c", CLIENT, &outbound.to_string()]).output().expect("client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc client failed after {:?}: {}\nstdout: {stdout}\nstderr: {}\nclient sidecar:\n{}\nserver sidecar:\n{}",
        start.elapsed(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        client_proxy.logs(),
        server_proxy.logs()
    );
    // SERVING is 1; the server saw the caller's verified identity as metadata.
    assert_eq!(stdout.trim(), format!("status 1 peer {CLIENT_ID}"));
    let m = server_proxy.metrics();
    assert!(metric_sum(&m, "meshward_requests_total", &["inbound", "2xx", CLIENT_ID]) >= 20.0, "{m}");
}
