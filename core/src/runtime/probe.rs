//! The built-in probe handlers: `httpGet`, `tcpSocket` and `exec`, run on a driver-pool
//! thread when the host's [`Driver`](super::Driver) does not run probes itself. Each is
//! bounded by the probe's `timeoutSeconds` in real time (these are real sockets and
//! processes, whatever clock the control plane runs on).
//!
//! Where no `host` is given, a probe goes to the instance's address (`status.address`,
//! without its port), or to `127.0.0.1` if the driver reported none.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::DriverError;
use crate::clock::{Clock, SystemClock};
use crate::controller::probe::{
    Handler, MAX_PROBE_REDIRECTS, Probe, ProbeOutcome, ProbeType, Scheme,
};
use crate::store::Object;

/// The largest HTTP response head a probe reads.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Runs `probe` of `instance` with the built-in handlers. `Err` when the handler cannot run
/// it at all (gRPC and HTTPS need the driver's own `probe`); such errors are discarded by
/// the agent, as upstream discards a prober's errors.
pub fn run_builtin(
    instance: &Object,
    probe: &Probe,
) -> std::result::Result<ProbeOutcome, DriverError> {
    let timeout = Duration::from_secs(u64::from(probe.timeout_seconds));
    let deadline = SystemClock.now() + timeout;
    let default_host = || instance_host(instance);
    match &probe.handler {
        Handler::TcpSocket { host, port } => {
            let host = host.clone().unwrap_or_else(default_host);
            Ok(match connect(&host, *port, deadline) {
                Ok(_) => ProbeOutcome::Success,
                Err(e) => ProbeOutcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            })
        }
        Handler::HttpGet {
            scheme: Scheme::Https,
            ..
        } => Err(DriverError(
            "HTTPS probes need the driver's own probe: floyd's built-in prober has no TLS".into(),
        )),
        Handler::HttpGet {
            host,
            port,
            path,
            headers,
            ..
        } => {
            let host = host.clone().unwrap_or_else(default_host);
            Ok(http_get(&host, *port, path, headers, deadline))
        }
        Handler::Exec { command } => Ok(exec(instance, probe.probe_type, command, deadline)),
        Handler::Grpc { .. } => Err(DriverError(
            "gRPC probes need the driver's own probe: floyd has no built-in gRPC client".into(),
        )),
    }
}

/// The host part of the instance's `status.address` (`host:port`, `[v6]:port`, or a bare
/// host), or `127.0.0.1`.
pub(crate) fn instance_host(instance: &Object) -> String {
    let Some(addr) = instance.status["address"]
        .as_str()
        .filter(|a| !a.is_empty())
    else {
        return "127.0.0.1".into();
    };
    if let Some((h, _)) = addr.strip_prefix('[').and_then(|r| r.split_once(']')) {
        return h.to_string();
    }
    match addr.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => addr.to_string(),
    }
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(SystemClock.now());
    if left.is_zero() {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "probe timed out",
        ))
    } else {
        Ok(left)
    }
}

fn connect(host: &str, port: u16, deadline: Instant) -> std::io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, remaining(deadline)?) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `GET` with upstream's rules: 200 ≤ status < 400 is success; redirects on the same host
/// are followed (at most 10), a redirect elsewhere is taken as the 3xx it is (success).
fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    deadline: Instant,
) -> ProbeOutcome {
    let (mut port, mut path) = (port, path.to_string());
    for _ in 0..=MAX_PROBE_REDIRECTS {
        let (code, location) = match http_once(host, port, &path, headers, deadline) {
            Ok(r) => r,
            Err(e) => {
                return ProbeOutcome::Failure(format!(
                    "Get \"http://{}{path}\": {e}",
                    authority(host, port)
                ));
            }
        };
        if !(300..400).contains(&code) {
            return if (200..300).contains(&code) {
                ProbeOutcome::Success
            } else {
                ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        match location
            .as_deref()
            .and_then(|l| redirect(host, port, &path, l))
        {
            Some((p, next)) => (port, path) = (p, next),
            // No location, another host, or HTTPS: the 3xx itself, a success.
            None => return ProbeOutcome::Success,
        }
    }
    ProbeOutcome::Failure(format!("stopped after {MAX_PROBE_REDIRECTS} redirects"))
}

fn authority(host: &str, port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 { h } else { format!("{h}:{port}") }
}

/// Where a same-host redirect goes: `(port, path)`; `None` to stop there.
fn redirect(host: &str, port: u16, path: &str, location: &str) -> Option<(u16, String)> {
    if let Some(rest) = location.strip_prefix("http://") {
        let (auth, p) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (h, port) = match auth.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, p.parse().ok()?),
            _ => (auth, 80),
        };
        let h = h.trim_start_matches('[').trim_end_matches(']');
        return h.eq_ignore_ascii_case(host).then(|| (port, p.to_string()));
    }
    if location.contains("://") || location.starts_with("//") {
        return None;
    }
    if location.starts_with('/') {
        return Some((port, location.to_string()));
    }
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some((port, format!("{dir}{location}")))
}

/// One request; the status code and the `Location` header.
fn http_once(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    deadline: Instant,
) -> std::io::Result<(u16, Option<String>)> {
    let mut s = connect(host, port, deadline)?;
    s.set_write_timeout(Some(remaining(deadline)?))?;
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let mut set = |name: &str, default: String| {
        let v = headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(default, |(_, v)| v.clone());
        req.push_str(&format!("{name}: {v}\r\n"));
    };
    set("Host", authority(host, port));
    set(
        "User-Agent",
        format!("floyd-probe/{}", env!("CARGO_PKG_VERSION")),
    );
    set("Accept", "*/*".into());
    for (n, v) in headers {
        if !["host", "user-agent", "accept", "connection"]
            .iter()
            .any(|d| n.eq_ignore_ascii_case(d))
        {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;

    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(bad("response head over 16 KiB"));
        }
        s.set_read_timeout(Some(remaining(deadline)?))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(bad("connection closed before a complete response"));
        }
        head.extend_from_slice(&buf[..n]);
    };
    let head = std::str::from_utf8(&head[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| bad("malformed status line"))?;
    let location = lines.find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    Ok((code, location))
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Runs `command` on this host with `FLOYD_INSTANCE` (the instance's key),
/// `FLOYD_ADDRESS` (its address, if any) and `FLOYD_PROBE` (the probe type) in its
/// environment; exit status 0 is success. A command still running at the timeout is
/// killed (a failure); one that cannot be started is a failure too.
fn exec(instance: &Object, t: ProbeType, command: &[String], deadline: Instant) -> ProbeOutcome {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("FLOYD_INSTANCE", instance.key())
        .env("FLOYD_PROBE", t.name())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(a) = instance.status["address"].as_str() {
        cmd.env("FLOYD_ADDRESS", a);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::Failure(format!("could not run {:?}: {e}", command[0])),
    };
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return ProbeOutcome::Success,
            Ok(Some(status)) => {
                return ProbeOutcome::Failure(format!(
                    "command {:?} exited with {status}",
                    command[0]
                ));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return ProbeOutcome::Failure(format!("waiting for {:?}: {e}", command[0]));
            }
        }
        let Ok(left) = remaining(deadline) else {
            let _ = child.kill();
            let _ = child.wait();
            return ProbeOutcome::Failure(format!("command {:?} timed out", command[0]));
        };
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_address(addr: &str) -> Object {
        let mut o: Object = serde_json::from_value(json!({
            "kind": "Instance", "metadata": {"name": "a", "namespace": "ns"}
        }))
        .unwrap();
        o.status = json!({"address": addr});
        o
    }

    #[test]
    fn the_default_host_is_the_addresss_host() {
        assert_eq!(instance_host(&with_address("10.0.0.5:8080")), "10.0.0.5");
        assert_eq!(instance_host(&with_address("web-1.local")), "web-1.local");
        assert_eq!(instance_host(&with_address("[::1]:80")), "::1");
        assert_eq!(instance_host(&with_address("fe80::1")), "fe80::1");
        assert_eq!(instance_host(&with_address("")), "127.0.0.1");
    }

    #[test]
    fn redirects_follow_only_the_same_host() {
        assert_eq!(redirect("h", 80, "/a/b", "/c"), Some((80, "/c".into())));
        assert_eq!(redirect("h", 81, "/a/b", "c"), Some((81, "/a/c".into())));
        assert_eq!(
            redirect("h", 80, "/", "http://H:9000/x"),
            Some((9000, "/x".into()))
        );
        assert_eq!(redirect("h", 80, "/", "http://h"), Some((80, "/".into())));
        assert_eq!(redirect("h", 80, "/", "http://other/x"), None);
        assert_eq!(redirect("h", 80, "/", "https://h/x"), None);
        assert_eq!(redirect("h", 80, "/", "//other/x"), None);
    }
}
