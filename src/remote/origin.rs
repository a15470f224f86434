//! The HTTP client of an rccremote origin (`RCC_REMOTE_ORIGIN`, `--origin`):
//! rcc's headers (`operations/pull.go`), rcc's network settings (proxies
//! from `settings.yaml`, else the `HTTPS_PROXY`-style variables; the CA of
//! `<ROBOCORP_HOME>/ca-bundle.pem`; `verify-ssl: false`), and bounded
//! timeouts and retries.

use crate::error::{Error, Result};
use crate::settings::NetworkSettings;
use std::io::{Read, Write};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// `X-Rcc-Random-Identity`: rccremote answers 409 to its own identity (loops).
pub const RANDOM_IDENTITY_HEADER: &str = "X-Rcc-Random-Identity";
/// rcc's `RCC_REMOTE_AUTHORIZATION`, sent as `Authorization` when set.
pub const AUTHORIZATION_ENV: &str = "RCC_REMOTE_AUTHORIZATION";
/// rcc's `RCC_REMOTE_ORIGIN`.
pub const ORIGIN_ENV: &str = "RCC_REMOTE_ORIGIN";

/// Connecting gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole small request (`/parts`, doctor's probe) gives up after this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A download gives up when no byte arrives for this long ...
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// ... and when it takes longer than this in all.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Tries of an idempotent GET (with 0.5 s, 1 s, ... between them).
pub const GET_TRIES: u32 = 3;

/// How long a download may take: in all, and with no byte arriving.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub global: Duration,
    pub idle: Duration,
}

impl Patience {
    /// A whole pull: large, but never forever.
    pub const DOWNLOAD: Patience = Patience {
        global: DOWNLOAD_TIMEOUT,
        idle: READ_IDLE_TIMEOUT,
    };
}

/// `RCC_REMOTE_ORIGIN`, when set and not empty.
pub fn origin_from_env() -> Option<String> {
    std::env::var(ORIGIN_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// A random per-process identity (rcc's `common.RandomIdentifier`: hex).
fn random_identity() -> String {
    use std::sync::OnceLock;
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut bytes = [0u8; 16];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok();
        if !ok {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            bytes[..8].copy_from_slice(&(t as u64).to_le_bytes());
            bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
    .clone()
}

/// One origin and the agent that talks to it.
pub struct Origin {
    /// The origin URL without a trailing `/`.
    pub url: String,
    agent: ureq::Agent,
    identity: String,
    authorization: Option<String>,
}

/// A response's status and (small) body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Origin {
    /// The client for `url` with `settings` (rcc's network settings of the
    /// user's ROBOCORP_HOME).
    pub fn new(url: &str, settings: &NetworkSettings) -> Result<Origin> {
        let url = url.trim().trim_end_matches('/').to_string();
        let remote = |msg: String| Error::Remote {
            origin: url.clone(),
            msg,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(remote("not an http:// or https:// URL".into()));
        }
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(!settings.verify_ssl);
        if let Some(roots) = root_certs(settings)? {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        let proxy = proxy_for(&url, settings).map_err(remote)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(user_agent())
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(DOWNLOAD_TIMEOUT))
            .timeout_per_read(Some(READ_IDLE_TIMEOUT))
            .tls_config(tls.build())
            .proxy(proxy)
            .build();
        Ok(Origin {
            url,
            agent: config.new_agent(),
            identity: random_identity(),
            authorization: std::env::var(AUTHORIZATION_ENV)
                .ok()
                .filter(|v| !v.is_empty()),
        })
    }

    /// The same origin with an agent, and so kept connections, of its own:
    /// for another [`OriginThread`] (a connection must stay with the
    /// thread that opened it, see there).
    pub fn with_own_connections(&self) -> Origin {
        Origin {
            url: self.url.clone(),
            agent: self.agent.config().clone().new_agent(),
            identity: self.identity.clone(),
            authorization: self.authorization.clone(),
        }
    }

    fn err(&self, msg: String) -> Error {
        Error::Remote {
            origin: self.url.clone(),
            msg,
        }
    }

    fn headers<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        req = req.header(RANDOM_IDENTITY_HEADER, &self.identity);
        if let Some(auth) = &self.authorization {
            req = req.header("Authorization", auth);
        }
        req
    }

    /// `GET {origin}{path}`: any HTTP status is an answer; a transport
    /// error is retried up to [`GET_TRIES`] times, as is a 5xx status.
    pub fn get(&self, path: &str) -> Result<Answer> {
        let url = format!("{}{path}", self.url);
        let mut last = String::new();
        for attempt in 0..GET_TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << (attempt - 1)));
            }
            let req = self
                .headers(self.agent.get(&url))
                .config()
                .timeout_global(Some(REQUEST_TIMEOUT))
                .build();
            match req.call() {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp
                        .body_mut()
                        .with_config()
                        .limit(64 << 20)
                        .read_to_string();
                    match body {
                        Ok(body) if status < 500 || attempt + 1 == GET_TRIES => {
                            return Ok(Answer { status, body })
                        }
                        Ok(body) => last = format!("HTTP {status}: {}", first_line(&body)),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tracing::debug!("GET {url}: {last} (try {} of {GET_TRIES})", attempt + 1);
        }
        Err(self.err(format!("GET {path}: {last} ({GET_TRIES} tries)")))
    }

    /// One `GET {origin}{path}` within `timeout`, no retry: its status
    /// (any status means the origin answers), or why there was none.
    pub fn probe(&self, path: &str, timeout: Duration) -> std::result::Result<u16, String> {
        let url = format!("{}{path}", self.url);
        self.headers(self.agent.get(&url))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    /// `POST {origin}{path}` with `body`, the answer's body streamed into
    /// `sink` (`on_bytes` gets the running total and the announced length);
    /// a non-2xx status is an error. Not retried (the caller decides).
    pub fn post_to(
        &self,
        path: &str,
        body: &str,
        patience: Patience,
        sink: &mut dyn Write,
        on_bytes: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<u64> {
        let Body {
            mut reader,
            len: announced,
            ..
        } = self.post(path, body, None, patience)?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(self.err(format!(
                        "POST {path}: download broke after {total} bytes: {e}"
                    )))
                }
            };
            sink.write_all(&buf[..n])
                .map_err(|e| self.err(format!("POST {path}: writing the download: {e}")))?;
            total += n as u64;
            on_bytes(total, announced);
        }
        if let Some(len) = announced.filter(|&l| l != total) {
            return Err(self.err(format!(
                "POST {path}: download ended after {total} of {len} bytes"
            )));
        }
        Ok(total)
    }
}

/// What asks an origin for `/delta` answers: the origin itself, or the
/// thread that keeps its connections ([`OriginThread`]).
pub trait Post {
    fn url(&self) -> &str;
    /// `POST {origin}{path}` with `body` (and a `Range` header when
    /// `range` is given): the answer's body as a reader. A non-2xx status
    /// is an error. Dropping the reader before its end closes the
    /// connection; read to its end, the connection is kept for the next
    /// request.
    fn post(&self, path: &str, body: &str, range: Option<&str>, patience: Patience)
        -> Result<Body>;
}

impl Post for Origin {
    fn url(&self) -> &str {
        &self.url
    }

    fn post(
        &self,
        path: &str,
        body: &str,
        range: Option<&str>,
        patience: Patience,
    ) -> Result<Body> {
        let url = format!("{}{path}", self.url);
        let mut req = self
            .headers(self.agent.post(&url))
            .content_type("text/plain");
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        let mut resp = req
            .config()
            .timeout_global(Some(patience.global))
            .timeout_per_read(Some(patience.idle))
            .build()
            .send(body)
            .map_err(|e| self.err(format!("POST {path}: {e}")))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            return Err(self.err(format!("POST {path}: HTTP {status}: {}", first_line(&text))));
        }
        // `Content-Range: bytes 0-99/1234`: a part of an answer of 1234 bytes
        let whole = (status == 206)
            .then(|| resp.headers().get("content-range"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse().ok());
        let len = resp.body().content_length();
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        Ok(Body {
            reader: Box::new(reader),
            len,
            whole,
        })
    }
}

/// An origin whose requests are all made by one thread of its own, which
/// keeps the connections alive between them. Why a thread: the FUSE
/// server's threads have a descriptor table of their own
/// (`lower::fuse::mount`), so a kept connection opened by one table's
/// thread must never be used, or closed, by the other's: there its
/// descriptor number means another file, or none. The thread starts on
/// the first request (a process about to enter a user namespace must
/// have one thread) and ends, closing its connections, when this drops.
pub struct OriginThread {
    url: String,
    state: Mutex<Thread>,
}

enum Thread {
    /// No request yet: the origin waits for its thread.
    NotYet(Origin),
    /// The thread runs and takes requests here.
    Running(mpsc::Sender<Ask>),
}

struct Ask {
    path: String,
    body: String,
    range: Option<String>,
    patience: Patience,
    answer: mpsc::SyncSender<Result<Body>>,
}

impl OriginThread {
    pub fn new(origin: Origin) -> OriginThread {
        OriginThread {
            url: origin.url.clone(),
            state: Mutex::new(Thread::NotYet(origin)),
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Ask>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = mpsc::channel::<Ask>();
        let origin = match std::mem::replace(&mut *state, Thread::Running(tx.clone())) {
            Thread::Running(running) => {
                *state = Thread::Running(running.clone());
                return Ok(running);
            }
            Thread::NotYet(origin) => origin,
        };
        std::thread::Builder::new()
            .name("vhrun-origin".into())
            .spawn(move || {
                for ask in rx {
                    let r = origin.post(&ask.path, &ask.body, ask.range.as_deref(), ask.patience);
                    match r {
                        Err(e) => drop(ask.answer.send(Err(e))),
                        Ok(Body {
                            mut reader,
                            len,
                            whole,
                        }) => {
                            let (chunks, from) = mpsc::sync_channel(4);
                            let body = Body {
                                reader: Box::new(Chunks {
                                    from,
                                    at: Vec::new(),
                                    pos: 0,
                                }),
                                len,
                                whole,
                            };
                            if ask.answer.send(Ok(body)).is_err() {
                                continue;
                            }
                            // until its end, or until the asker stops reading
                            loop {
                                let mut buf = vec![0u8; 64 << 10];
                                let chunk = match reader.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        buf.truncate(n);
                                        Ok(buf)
                                    }
                                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                                        continue
                                    }
                                    Err(e) => Err(e),
                                };
                                let failed = chunk.is_err();
                                if chunks.send(chunk).is_err() || failed {
                                    break;
                                }
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::spawn("the origin's thread", e))?;
        Ok(tx)
    }
}

impl Post for OriginThread {
    fn url(&self) -> &str {
        &self.url
    }
    fn post(
        &self,
        path: &str,
        body: &str,
        range: Option<&str>,
        patience: Patience,
    ) -> Result<Body> {
        let gone = || Error::Remote {
            origin: self.url.clone(),
            msg: format!("POST {path}: the origin's thread is gone"),
        };
        let (answer, answered) = mpsc::sync_channel(1);
        self.sender()?
            .send(Ask {
                path: path.to_string(),
                body: body.to_string(),
                range: range.map(str::to_string),
                patience,
                answer,
            })
            .map_err(|_| gone())?;
        answered.recv().map_err(|_| gone())?
    }
}

/// The reading end of a body the origin's thread reads.
struct Chunks {
    from: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    at: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.at.len() {
            match self.from.recv() {
                Ok(chunk) => {
                    self.at = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.at.len() - self.pos);
        buf[..n].copy_from_slice(&self.at[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An answer's body, as it streams in.
pub struct Body {
    pub reader: Box<dyn Read + Send>,
    /// Its announced length.
    pub len: Option<u64>,
    /// When it is a range of the answer (HTTP 206): the whole answer's size.
    pub whole: Option<u64>,
}

/// Go's `SystemCertPool` files on Linux (the first that exists is read).
const SYSTEM_CA_FILES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// rcc's `loadRootCAs`: the system's CAs plus `<ROBOCORP_HOME>/ca-bundle.pem`.
/// `None` (ureq's built-in Mozilla roots) when the system has no CA file
/// and there is no bundle.
fn root_certs(settings: &NetworkSettings) -> Result<Option<Vec<ureq::tls::Certificate<'static>>>> {
    let pem_certs = |pem: &[u8]| -> Vec<ureq::tls::Certificate<'static>> {
        ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect()
    };
    let mut certs = SYSTEM_CA_FILES
        .iter()
        .find_map(|f| std::fs::read(f).ok())
        .map(|pem| pem_certs(&pem))
        .unwrap_or_default();
    if let Some(bundle) = &settings.ca_bundle {
        let pem = std::fs::read(bundle).map_err(|e| Error::io(bundle, e))?;
        let extra = pem_certs(&pem);
        if extra.is_empty() {
            return Err(Error::bad_input(bundle, "no PEM certificate in it"));
        }
        certs.extend(extra);
    }
    Ok((!certs.is_empty()).then_some(certs))
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().take(200).collect();
    if out.is_empty() {
        out = "(empty body)".into();
    }
    out
}

/// `vhrun/<version> (linux <arch>)`, as rcc's `rcc/<version> (<os> <arch>)`.
pub fn user_agent() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("vhrun/{} (linux {arch})", env!("CARGO_PKG_VERSION"))
}

/// The proxy for `url`: settings.yaml's `https-proxy` (https origins) or
/// `http-proxy` (http origins) with its `no-proxy`, as rcc's transport; with
/// neither, the `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` variables.
pub fn proxy_for(
    url: &str,
    settings: &NetworkSettings,
) -> std::result::Result<Option<ureq::Proxy>, String> {
    let chosen = if url.starts_with("https://") {
        &settings.https_proxy
    } else {
        &settings.http_proxy
    };
    if chosen.is_empty() {
        return Ok(ureq::Proxy::try_from_env());
    }
    let proxy = ureq::Proxy::new(chosen).map_err(|e| format!("proxy {chosen:?}: {e}"))?;
    if settings.no_proxy.is_empty() {
        return Ok(Some(proxy));
    }
    let mut b = ureq::Proxy::builder(proxy.protocol())
        .host(proxy.host())
        .port(proxy.port())
        .no_proxy(&settings.no_proxy);
    if let Some(u) = proxy.username() {
        b = b.username(u);
    }
    if let Some(p) = proxy.password() {
        b = b.password(p);
    }
    b.build()
        .map(Some)
        .map_err(|e| format!("proxy {chosen:?}: {e}"))
}
