//! Health probes, the pure part: the probe fields of an instance spec with the kubelet's
//! defaults and validation, and the per-probe worker's threshold logic (`k8s-semantics.md`
//! §5.1–§5.3). Running a probe (HTTP, TCP, exec, or the host's `Driver::probe`) and the
//! timing live in the runtime's agent; nothing here does I/O or reads a clock.

use serde_json::{Map, Value, json};

use super::nonnegative_int32;
use crate::error::{Error, Result};

/// `periodSeconds` when unset (or 0).
pub const DEFAULT_PERIOD_SECONDS: u32 = 10;
/// `timeoutSeconds` when unset (or 0).
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 1;
/// `failureThreshold` when unset (or 0).
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Attempts of one probe whose handler returns an error (upstream's `maxProbeRetries`).
pub const MAX_PROBE_ATTEMPTS: usize = 3;
/// Bytes of an HTTP probe's body that are read, at most.
pub const MAX_PROBE_BODY: usize = 10 * 1024;
/// Redirects an HTTP probe follows on the same host, at most.
pub const MAX_PROBE_REDIRECTS: usize = 10;

/// Which of an instance's three probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeType {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeType {
    /// In the order the agent looks at them.
    pub const ALL: [ProbeType; 3] = [
        ProbeType::Startup,
        ProbeType::Liveness,
        ProbeType::Readiness,
    ];

    /// The spec field: `startupProbe`, `livenessProbe`, `readinessProbe`.
    pub fn field(self) -> &'static str {
        match self {
            ProbeType::Startup => "startupProbe",
            ProbeType::Liveness => "livenessProbe",
            ProbeType::Readiness => "readinessProbe",
        }
    }

    /// `startup`, `liveness`, `readiness`: the `type` a driver's `probe` is given.
    pub fn name(self) -> &'static str {
        match self {
            ProbeType::Startup => "startup",
            ProbeType::Liveness => "liveness",
            ProbeType::Readiness => "readiness",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    /// Run a command on the host; exit status 0 is success.
    Exec { command: Vec<String> },
    /// `GET path`; a status in 200..400 is success.
    HttpGet {
        scheme: Scheme,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection established within the timeout is success.
    TcpSocket { host: Option<String>, port: u16 },
    /// gRPC health checking; floyd has no built-in gRPC client, so only a driver's own
    /// `probe` can run it.
    Grpc { port: u16, service: Option<String> },
}

/// One probe of an instance, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub probe_type: ProbeType,
    pub handler: Handler,
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe as written, with the defaults filled in and `"type"` set to
    /// [`ProbeType::name`]: what a host driver's `probe` receives.
    pub spec: Value,
}

/// The outcome of running one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// Failed, with what the handler saw (`HTTP probe failed with statuscode: 500`).
    Failure(String),
}

/// An instance's probes; `None` where the spec has none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
}

impl Probes {
    /// The probes of an instance spec (`{ports, readinessProbe, livenessProbe,
    /// startupProbe, ...}`). `field` names the spec in errors (`spec`, or
    /// `spec.template.spec` for a template). A named port must be one of the spec's
    /// `ports`.
    pub fn from_instance_spec(spec: &Value, field: &str) -> Result<Probes> {
        let mut out = Probes::default();
        let Some(map) = spec.as_object() else {
            return Ok(out);
        };
        if !ProbeType::ALL.iter().any(|t| map.contains_key(t.field())) {
            return Ok(out);
        }
        for t in ProbeType::ALL {
            let f = format!("{field}.{}", t.field());
            let probe = match map.get(t.field()) {
                None | Some(Value::Null) => None,
                Some(v) => Some(Probe::parse(t, v, map.get("ports"), &f)?),
            };
            match t {
                ProbeType::Startup => out.startup = probe,
                ProbeType::Liveness => out.liveness = probe,
                ProbeType::Readiness => out.readiness = probe,
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }

    pub fn get(&self, t: ProbeType) -> Option<&Probe> {
        match t {
            ProbeType::Startup => self.startup.as_ref(),
            ProbeType::Liveness => self.liveness.as_ref(),
            ProbeType::Readiness => self.readiness.as_ref(),
        }
    }
}

impl Probe {
    fn parse(t: ProbeType, v: &Value, ports: Option<&Value>, field: &str) -> Result<Probe> {
        let Some(m) = v.as_object() else {
            return Err(Error::invalid(
                field,
                format!("must be an object, got {}", super::json_type(v)),
            ));
        };
        let seconds = |name: &str, default: u32| -> Result<u32> {
            let f = format!("{field}.{name}");
            Ok(match nonnegative_int32(m.get(name), &f)? {
                None | Some(0) => default,
                Some(n) => n as u32,
            })
        };
        let initial_delay_seconds = seconds("initialDelaySeconds", 0)?;
        let period_seconds = seconds("periodSeconds", DEFAULT_PERIOD_SECONDS)?;
        let timeout_seconds = seconds("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)?;
        let success_threshold = seconds("successThreshold", 1)?;
        let failure_threshold = seconds("failureThreshold", DEFAULT_FAILURE_THRESHOLD)?;
        if t != ProbeType::Readiness && success_threshold != 1 {
            return Err(Error::invalid(
                format!("{field}.successThreshold"),
                format!("must be 1 for {} probes", t.name()),
            ));
        }
        if let Some(g) = m
            .get("terminationGracePeriodSeconds")
            .filter(|g| !g.is_null())
        {
            let f = format!("{field}.terminationGracePeriodSeconds");
            if t == ProbeType::Readiness {
                return Err(Error::invalid(f, "must not be set for readiness probes"));
            }
            let n = super::int32(g, &f)?;
            if n <= 0 {
                return Err(Error::invalid(f, "must be greater than 0"));
            }
        }

        let kinds: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
            .into_iter()
            .filter(|k| m.get(*k).is_some_and(|v| !v.is_null()))
            .collect();
        let kind = match kinds.as_slice() {
            [k] => *k,
            [] => {
                return Err(Error::invalid(
                    field,
                    "must specify a handler type (exec, httpGet, tcpSocket or grpc)",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    format!("{field}.{}", kinds[1]),
                    "may not specify more than 1 handler type",
                ));
            }
        };
        let hf = format!("{field}.{kind}");
        let h = m[kind].as_object().ok_or_else(|| {
            Error::invalid(
                &hf,
                format!("must be an object, got {}", super::json_type(&m[kind])),
            )
        })?;
        let handler = match kind {
            "exec" => {
                let cf = format!("{hf}.command");
                let cmd = match h.get("command") {
                    Some(Value::Array(a)) if !a.is_empty() => a,
                    _ => return Err(Error::invalid(cf, "must be a non-empty list of strings")),
                };
                let mut command = Vec::with_capacity(cmd.len());
                for (i, c) in cmd.iter().enumerate() {
                    let s = c
                        .as_str()
                        .ok_or_else(|| Error::invalid(format!("{cf}[{i}]"), "must be a string"))?;
                    if s.contains('\0') || (i == 0 && s.is_empty()) {
                        return Err(Error::invalid(
                            format!("{cf}[{i}]"),
                            "must not contain NUL (and the program must not be empty)",
                        ));
                    }
                    command.push(s.to_string());
                }
                Handler::Exec { command }
            }
            "httpGet" => {
                let scheme = match h.get("scheme") {
                    None | Some(Value::Null) => Scheme::Http,
                    Some(Value::String(s)) if s == "HTTP" => Scheme::Http,
                    Some(Value::String(s)) if s == "HTTPS" => Scheme::Https,
                    Some(other) => {
                        return Err(Error::invalid(
                            format!("{hf}.scheme"),
                            format!("must be \"HTTP\" or \"HTTPS\", got {other}"),
                        ));
                    }
                };
                let path = match h.get("path") {
                    None | Some(Value::Null) => "/".to_string(),
                    Some(Value::String(p)) if p.is_empty() => "/".to_string(),
                    Some(Value::String(p))
                        if p.starts_with('/') && p.len() <= 2048 && !has_space_or_control(p) =>
                    {
                        p.clone()
                    }
                    Some(_) => {
                        return Err(Error::invalid(
                            format!("{hf}.path"),
                            "must be a path starting with '/', without spaces or control \
                             characters, at most 2048 bytes",
                        ));
                    }
                };
                let mut headers = Vec::new();
                match h.get("httpHeaders") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) => {
                        for (i, hv) in a.iter().enumerate() {
                            let f = format!("{hf}.httpHeaders[{i}]");
                            let name = hv.get("name").and_then(Value::as_str).unwrap_or("");
                            if name.is_empty() || !name.bytes().all(is_header_name_byte) {
                                return Err(Error::invalid(
                                    format!("{f}.name"),
                                    "must be a valid HTTP header name",
                                ));
                            }
                            let value = match hv.get("value") {
                                None | Some(Value::Null) => "",
                                Some(Value::String(s)) => s.as_str(),
                                Some(_) => {
                                    return Err(Error::invalid(
                                        format!("{f}.value"),
                                        "must be a string",
                                    ));
                                }
                            };
                            if value.chars().any(|c| c.is_control() && c != '\t') {
                                return Err(Error::invalid(
                                    format!("{f}.value"),
                                    "must not contain control characters",
                                ));
                            }
                            headers.push((name.to_string(), value.to_string()));
                        }
                    }
                    Some(_) => {
                        return Err(Error::invalid(
                            format!("{hf}.httpHeaders"),
                            "must be a list of {name, value}",
                        ));
                    }
                }
                Handler::HttpGet {
                    scheme,
                    host: host(h, &hf)?,
                    port: port(h.get("port"), ports, &format!("{hf}.port"), true)?,
                    path,
                    headers,
                }
            }
            "tcpSocket" => Handler::TcpSocket {
                host: host(h, &hf)?,
                port: port(h.get("port"), ports, &format!("{hf}.port"), true)?,
            },
            _ => Handler::Grpc {
                port: port(h.get("port"), ports, &format!("{hf}.port"), false)?,
                service: match h.get("service") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => {
                        return Err(Error::invalid(format!("{hf}.service"), "must be a string"));
                    }
                },
            },
        };

        let mut spec = m.clone();
        spec.insert("type".into(), json!(t.name()));
        spec.insert("initialDelaySeconds".into(), json!(initial_delay_seconds));
        spec.insert("periodSeconds".into(), json!(period_seconds));
        spec.insert("timeoutSeconds".into(), json!(timeout_seconds));
        spec.insert("successThreshold".into(), json!(success_threshold));
        spec.insert("failureThreshold".into(), json!(failure_threshold));
        Ok(Probe {
            probe_type: t,
            handler,
            initial_delay_seconds,
            period_seconds,
            timeout_seconds,
            success_threshold,
            failure_threshold,
            spec: Value::Object(spec),
        })
    }
}

fn has_space_or_control(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// RFC 9110 `token` characters.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn host(h: &Map<String, Value>, hf: &str) -> Result<Option<String>> {
    match h.get("host") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() <= 253 && !has_space_or_control(s) => Ok(Some(s.clone())),
        Some(_) => Err(Error::invalid(
            format!("{hf}.host"),
            "must be a host name or address without spaces, at most 253 bytes",
        )),
    }
}

/// A probe port: a number in 1..=65535, or (when `named` is allowed) the name of one of the
/// spec's `ports` (an IANA service name: 1–15 lowercase letters, digits and '-', with a
/// letter, no leading, trailing or doubled '-').
fn port(v: Option<&Value>, ports: Option<&Value>, field: &str, named: bool) -> Result<u16> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| p as u16)
            .ok_or_else(|| Error::invalid(field, format!("must be between 1 and 65535, got {n}"))),
        Some(Value::String(name)) if named => {
            let b = name.as_bytes();
            let ok = (1..=15).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.iter().any(|c| c.is_ascii_lowercase())
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
                && !name.contains("--");
            if !ok {
                return Err(Error::invalid(
                    field,
                    format!("{name:?} is not a valid port name (IANA service name)"),
                ));
            }
            ports
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|p| p.get("port").and_then(Value::as_u64))
                .filter(|p| (1..=65535).contains(p))
                .map(|p| p as u16)
                .ok_or_else(|| {
                    Error::invalid(
                        field,
                        format!("no port named {name:?} (with a number in 1..=65535) in ports"),
                    )
                })
        }
        None | Some(Value::Null) => Err(Error::invalid(field, "Required value")),
        Some(other) => Err(Error::invalid(
            field,
            format!(
                "must be a port number{}, got {}",
                if named { " or name" } else { "" },
                super::json_type(other)
            ),
        )),
    }
}

/// A probe worker's written result (upstream's `results.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// The threshold logic of one probe worker (`worker.go doProbe`, step 9): a result is
/// written only after `successThreshold` successes or `failureThreshold` failures in a row;
/// a probe that errored counts for nothing. After a liveness failure, or any written startup
/// result, the worker is on hold until the instance runs again (the agent then makes a new
/// worker, which starts from the initial result with a full threshold).
#[derive(Clone, Debug)]
pub struct ProbeWorker {
    pub probe_type: ProbeType,
    success_threshold: u32,
    failure_threshold: u32,
    result: ProbeResult,
    last: Option<bool>,
    run: u32,
    on_hold: bool,
    /// A probe's outcome has been written (the initial result no longer stands).
    written: bool,
    /// The last failure's message (or error), for the status.
    pub message: String,
}

impl ProbeWorker {
    /// A worker for a freshly started instance, at its initial result: readiness
    /// `Failure`, liveness `Success`, startup `Unknown`.
    pub fn new(p: &Probe) -> ProbeWorker {
        ProbeWorker {
            probe_type: p.probe_type,
            success_threshold: p.success_threshold,
            failure_threshold: p.failure_threshold,
            result: match p.probe_type {
                ProbeType::Readiness => ProbeResult::Failure,
                ProbeType::Liveness => ProbeResult::Success,
                ProbeType::Startup => ProbeResult::Unknown,
            },
            last: None,
            run: 0,
            on_hold: false,
            written: false,
            message: String::new(),
        }
    }

    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// Starts from `r` instead of the initial result (an adopted instance that is already
    /// Ready keeps its readiness until a probe says otherwise).
    pub fn assume(&mut self, r: ProbeResult) {
        self.result = r;
    }

    /// Whether a probe's outcome has been written (rather than the initial result).
    pub fn written(&self) -> bool {
        self.written
    }

    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// Feeds one probe's outcome (`Err`: the handler erred, discarded). `Some(result)`
    /// when a result is written (its threshold was reached), whether or not it changed.
    pub fn observe(
        &mut self,
        outcome: std::result::Result<ProbeOutcome, String>,
    ) -> Option<ProbeResult> {
        let ok = match outcome {
            Err(e) => {
                self.message = format!("probe error: {e}");
                return None;
            }
            Ok(ProbeOutcome::Success) => true,
            Ok(ProbeOutcome::Failure(m)) => {
                self.message = m;
                false
            }
        };
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        if (!ok && self.run < self.failure_threshold) || (ok && self.run < self.success_threshold) {
            return None;
        }
        self.written = true;
        self.result = if ok {
            ProbeResult::Success
        } else {
            ProbeResult::Failure
        };
        if (self.probe_type == ProbeType::Liveness && !ok) || self.probe_type == ProbeType::Startup
        {
            self.on_hold = true;
            self.run = 0;
        }
        Some(self.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: Value) -> Result<Probes> {
        Probes::from_instance_spec(&spec, "spec")
    }

    fn field_of(r: Result<Probes>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_kubelets() {
        let p = parse(json!({"readinessProbe": {"tcpSocket": {"port": 80}}}))
            .unwrap()
            .readiness
            .unwrap();
        assert_eq!(
            (
                p.initial_delay_seconds,
                p.period_seconds,
                p.timeout_seconds,
                p.success_threshold,
                p.failure_threshold
            ),
            (0, 10, 1, 1, 3)
        );
        assert_eq!(p.spec["type"], "readiness");
        assert_eq!(p.spec["periodSeconds"], 10);
        // Zero means the default too, as the API server's defaulting does.
        let p = parse(
            json!({"livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 0,
                                               "failureThreshold": 0}}),
        )
        .unwrap()
        .liveness
        .unwrap();
        assert_eq!((p.period_seconds, p.failure_threshold), (10, 3));
        let p = parse(json!({"startupProbe": {"httpGet": {"port": 8080}}}))
            .unwrap()
            .startup
            .unwrap();
        assert_eq!(
            p.handler,
            Handler::HttpGet {
                scheme: Scheme::Http,
                host: None,
                port: 8080,
                path: "/".into(),
                headers: vec![]
            }
        );
    }

    #[test]
    fn a_spec_without_probes_has_none() {
        assert!(parse(json!({"version": "v1"})).unwrap().is_empty());
        assert!(parse(json!(null)).unwrap().is_empty());
        assert!(parse(json!({"readinessProbe": null})).unwrap().is_empty());
    }

    #[test]
    fn named_ports_resolve_against_the_specs_ports() {
        let spec = json!({"ports": [{"name": "http", "port": 8080}],
                          "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}}});
        match parse(spec).unwrap().readiness.unwrap().handler {
            Handler::HttpGet { port, path, .. } => {
                assert_eq!((port, path.as_str()), (8080, "/healthz"))
            }
            h => panic!("{h:?}"),
        }
        let spec = json!({"ports": [{"name": "http", "port": 8080}],
                          "readinessProbe": {"tcpSocket": {"port": "admin"}}});
        assert_eq!(field_of(parse(spec)), "spec.readinessProbe.tcpSocket.port");
    }

    #[test]
    fn bad_probes_name_their_field() {
        let cases = [
            (json!({"readinessProbe": 5}), "spec.readinessProbe"),
            (json!({"readinessProbe": {}}), "spec.readinessProbe"),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": 1}, "exec": {"command": ["x"]}}}),
                "spec.readinessProbe.tcpSocket",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": 0}}}),
                "spec.readinessProbe.tcpSocket.port",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": 70000}}}),
                "spec.readinessProbe.tcpSocket.port",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {}}}),
                "spec.readinessProbe.tcpSocket.port",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": "Bad-Name"}}}),
                "spec.readinessProbe.tcpSocket.port",
            ),
            (
                json!({"readinessProbe": {"grpc": {"port": "http"}}}),
                "spec.readinessProbe.grpc.port",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": -1}}),
                "spec.readinessProbe.periodSeconds",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": 1}, "timeoutSeconds": 1.5}}),
                "spec.readinessProbe.timeoutSeconds",
            ),
            (
                json!({"livenessProbe": {"tcpSocket": {"port": 1}, "successThreshold": 2}}),
                "spec.livenessProbe.successThreshold",
            ),
            (
                json!({"startupProbe": {"tcpSocket": {"port": 1}, "successThreshold": 3}}),
                "spec.startupProbe.successThreshold",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": 1},
                                          "terminationGracePeriodSeconds": 5}}),
                "spec.readinessProbe.terminationGracePeriodSeconds",
            ),
            (
                json!({"livenessProbe": {"tcpSocket": {"port": 1},
                                         "terminationGracePeriodSeconds": 0}}),
                "spec.livenessProbe.terminationGracePeriodSeconds",
            ),
            (
                json!({"readinessProbe": {"exec": {"command": []}}}),
                "spec.readinessProbe.exec.command",
            ),
            (
                json!({"readinessProbe": {"exec": {"command": ["sh", 3]}}}),
                "spec.readinessProbe.exec.command[1]",
            ),
            (
                json!({"readinessProbe": {"httpGet": {"port": 80, "path": "no-slash"}}}),
                "spec.readinessProbe.httpGet.path",
            ),
            (
                json!({"readinessProbe": {"httpGet": {"port": 80, "path": "/a b"}}}),
                "spec.readinessProbe.httpGet.path",
            ),
            (
                json!({"readinessProbe": {"httpGet": {"port": 80, "scheme": "FTP"}}}),
                "spec.readinessProbe.httpGet.scheme",
            ),
            (
                json!({"readinessProbe": {"httpGet": {"port": 80,
                        "httpHeaders": [{"name": "X Y", "value": "1"}]}}}),
                "spec.readinessProbe.httpGet.httpHeaders[0].name",
            ),
            (
                json!({"readinessProbe": {"httpGet": {"port": 80,
                        "httpHeaders": [{"name": "X", "value": "a\r\nInjected: 1"}]}}}),
                "spec.readinessProbe.httpGet.httpHeaders[0].value",
            ),
            (
                json!({"readinessProbe": {"tcpSocket": {"port": 80, "host": "a b"}}}),
                "spec.readinessProbe.tcpSocket.host",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(field_of(parse(spec.clone())), field, "{spec}");
        }
    }

    fn worker(t: ProbeType, success: u32, failure: u32) -> ProbeWorker {
        let p = parse(json!({t.field(): {"tcpSocket": {"port": 1},
                                          "successThreshold": success,
                                          "failureThreshold": failure}}))
        .unwrap();
        ProbeWorker::new(p.get(t).unwrap())
    }

    const OK: std::result::Result<ProbeOutcome, String> = Ok(ProbeOutcome::Success);
    fn fail() -> std::result::Result<ProbeOutcome, String> {
        Ok(ProbeOutcome::Failure(
            "HTTP probe failed with statuscode: 500".into(),
        ))
    }

    #[test]
    fn initial_results_are_upstreams() {
        assert_eq!(
            worker(ProbeType::Readiness, 1, 3).result(),
            ProbeResult::Failure
        );
        assert_eq!(
            worker(ProbeType::Liveness, 1, 3).result(),
            ProbeResult::Success
        );
        assert_eq!(
            worker(ProbeType::Startup, 1, 3).result(),
            ProbeResult::Unknown
        );
    }

    #[test]
    fn results_are_written_only_after_the_threshold_in_a_row() {
        let mut w = worker(ProbeType::Readiness, 2, 3);
        assert_eq!(w.observe(OK), None, "one success of two needed");
        assert_eq!(w.observe(fail()), None, "the run is broken");
        assert!(!w.written());
        assert_eq!(w.observe(OK), None);
        assert_eq!(w.observe(OK), Some(ProbeResult::Success), "two in a row");
        assert_eq!(
            w.observe(OK),
            Some(ProbeResult::Success),
            "written again, unchanged"
        );
        assert_eq!(w.observe(fail()), None);
        assert_eq!(w.observe(fail()), None);
        assert_eq!(w.result(), ProbeResult::Success, "two failures of three");
        assert_eq!(w.observe(fail()), Some(ProbeResult::Failure));
        assert_eq!(w.message, "HTTP probe failed with statuscode: 500");
        assert!(!w.on_hold(), "readiness keeps probing");
    }

    #[test]
    fn errors_count_for_nothing() {
        let mut w = worker(ProbeType::Readiness, 1, 2);
        assert_eq!(w.observe(OK), Some(ProbeResult::Success));
        assert_eq!(w.observe(fail()), None);
        assert_eq!(
            w.observe(Err("connection refused by the driver".into())),
            None
        );
        assert_eq!(w.result(), ProbeResult::Success);
        assert_eq!(
            w.observe(fail()),
            Some(ProbeResult::Failure),
            "the error did not break the run of failures"
        );
        assert_eq!(w.result(), ProbeResult::Failure);
    }

    #[test]
    fn liveness_failure_and_any_startup_result_put_the_worker_on_hold() {
        let mut w = worker(ProbeType::Liveness, 1, 2);
        assert_eq!(w.observe(fail()), None);
        assert_eq!(w.observe(fail()), Some(ProbeResult::Failure));
        assert_eq!((w.result(), w.on_hold()), (ProbeResult::Failure, true));

        let mut w = worker(ProbeType::Liveness, 1, 1);
        assert_eq!(w.observe(OK), Some(ProbeResult::Success));
        assert!(!w.on_hold(), "a liveness success keeps probing");

        let mut w = worker(ProbeType::Startup, 1, 3);
        assert_eq!(w.observe(OK), Some(ProbeResult::Success));
        assert_eq!((w.result(), w.on_hold()), (ProbeResult::Success, true));
    }
}
