//! What rcc's `settings.yaml` and the profile files beside it add to a
//! task's environment (`conda/robocorp.go` `injectNetworkEnvironment` and
//! the lines after it; `settings/data.go`, `settings/settings.go`).
//!
//! rcc layers `<ROBOCORP_HOME>/settings.yaml` over its built-in settings
//! (`verify-ssl: true`, everything else off or empty): a `certificates`
//! section replaces all three of its booleans (one left out reads as
//! false, as Go's zero value), a `network` value replaces the default only
//! when it is not empty. The files `piprc` and `ca-bundle.pem` in
//! ROBOCORP_HOME (written by `rcc configure switch`/profiles) add their
//! variables whenever they exist, settings.yaml or not.
//!
//! Only the sections that reach the environment are read; rcc refuses a
//! malformed file at start-up (exit 111), vhrun when it needs these values
//! (a one-line error naming the file). Not reproduced: `RCC_WARRANTY_VOIDED`
//! (`--warranty-voided` has no vhrun counterpart).

use crate::error::{Error, Result};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The settings that become environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// `certificates.verify-ssl` (default true).
    pub verify_ssl: bool,
    /// `certificates.ssl-no-revoke`.
    pub ssl_no_revoke: bool,
    /// `certificates.legacy-renegotiation-allowed`.
    pub legacy_renegotiation: bool,
    /// `network.https-proxy`, `network.http-proxy`, `network.no-proxy`.
    pub https_proxy: String,
    pub http_proxy: String,
    pub no_proxy: String,
    /// `<home>/piprc`, when it is a file.
    pub pip_rc: Option<PathBuf>,
    /// `<home>/ca-bundle.pem`, when it is a file.
    pub ca_bundle: Option<PathBuf>,
}

impl Default for NetworkSettings {
    /// rcc's built-in settings, with no profile files.
    fn default() -> Self {
        NetworkSettings {
            verify_ssl: true,
            ssl_no_revoke: false,
            legacy_renegotiation: false,
            https_proxy: String::new(),
            http_proxy: String::new(),
            no_proxy: String::new(),
            pip_rc: None,
            ca_bundle: None,
        }
    }
}

/// rcc's `pathlib.IsFile`: exists and is not a directory.
fn is_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| !m.is_dir())
}

impl NetworkSettings {
    /// The effective settings for `robocorp_home`: its settings.yaml (if
    /// any) over rcc's defaults, and its profile files.
    pub fn load(robocorp_home: &Path) -> Result<NetworkSettings> {
        let file = robocorp_home.join("settings.yaml");
        let mut settings = match std::fs::read(&file) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| Error::bad_input(&file, "not valid UTF-8 text"))?;
                Self::parse(&text).map_err(|msg| Error::bad_input(&file, msg))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NetworkSettings::default(),
            Err(e) => return Err(Error::io(&file, e)),
        };
        let pip_rc = robocorp_home.join("piprc");
        settings.pip_rc = is_file(&pip_rc).then_some(pip_rc);
        let ca_bundle = robocorp_home.join("ca-bundle.pem");
        settings.ca_bundle = is_file(&ca_bundle).then_some(ca_bundle);
        Ok(settings)
    }

    /// settings.yaml text layered over the defaults (profile files unset).
    pub fn parse(text: &str) -> std::result::Result<NetworkSettings, String> {
        let mut out = NetworkSettings::default();
        let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let top = match &doc {
            Value::Null => return Ok(out),
            Value::Mapping(m) => m,
            _ => return Err("not a settings map".into()),
        };
        match top.get("certificates") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(c)) => {
                let flag = |key: &str| go_bool(c.get(key), &format!("certificates.{key}"));
                out.verify_ssl = flag("verify-ssl")?;
                out.ssl_no_revoke = flag("ssl-no-revoke")?;
                out.legacy_renegotiation = flag("legacy-renegotiation-allowed")?;
            }
            Some(_) => return Err("certificates: not a map".into()),
        }
        match top.get("network") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(n)) => {
                for (key, slot) in [
                    ("https-proxy", &mut out.https_proxy),
                    ("http-proxy", &mut out.http_proxy),
                    ("no-proxy", &mut out.no_proxy),
                ] {
                    let value = go_string(n.get(key), &format!("network.{key}"))?;
                    if !value.is_empty() {
                        *slot = value;
                    }
                }
            }
            Some(_) => return Err("network: not a map".into()),
        }
        Ok(out)
    }

    /// The variables, in rcc's order.
    pub fn variables(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let mut push = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
        if self.ssl_no_revoke {
            push("MAMBA_SSL_NO_REVOKE", "true");
        }
        if !self.verify_ssl {
            push("MAMBA_SSL_VERIFY", "false");
            push("RC_DISABLE_SSL", "true");
            push("WDM_SSL_VERIFY", "0");
            push("NODE_TLS_REJECT_UNAUTHORIZED", "0");
        }
        if self.legacy_renegotiation {
            push("RC_TLS_LEGACY_RENEGOTIATION_ALLOWED", "true");
        }
        for (keys, value) in [
            (["https_proxy", "HTTPS_PROXY"], &self.https_proxy),
            (["http_proxy", "HTTP_PROXY"], &self.http_proxy),
            (["no_proxy", "NO_PROXY"], &self.no_proxy),
        ] {
            if !value.is_empty() {
                for k in keys {
                    push(k, value);
                }
            }
        }
        if let Some(p) = &self.pip_rc {
            push("PIP_CONFIG_FILE", &p.to_string_lossy());
        }
        if let Some(p) = &self.ca_bundle {
            for k in [
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "SSL_CERT_FILE",
                "NODE_EXTRA_CA_CERTS",
            ] {
                push(k, &p.to_string_lossy());
            }
        }
        env
    }
}

/// A yaml.v2 `bool` field: YAML 1.1 booleans (`yes`, `off`, ...), absent
/// or null is false; anything else is an error.
fn go_bool(v: Option<&Value>, key: &str) -> std::result::Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                Ok(true)
            }
            "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off"
            | "OFF" => Ok(false),
            _ => Err(format!("{key}: {s:?} is not a boolean")),
        },
        Some(_) => Err(format!("{key}: not a boolean")),
    }
}

/// A yaml.v2 `string` field: any scalar's text, null is empty.
fn go_string(v: Option<&Value>, key: &str) -> std::result::Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(format!("{key}: not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(env: &[(String, String)]) -> Vec<&str> {
        env.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn defaults_add_nothing() {
        for text in ["", "# nothing\n", "endpoints:\n  pypi: https://x/\n"] {
            let s = NetworkSettings::parse(text).unwrap();
            assert_eq!(s, NetworkSettings::default(), "{text:?}");
            assert!(s.variables().is_empty());
        }
        // an empty certificates section is not: verify-ssl reads as false
        let s = NetworkSettings::parse("certificates: {}\n").unwrap();
        assert!(!s.verify_ssl);
        assert_eq!(
            keys(&s.variables()),
            [
                "MAMBA_SSL_VERIFY",
                "RC_DISABLE_SSL",
                "WDM_SSL_VERIFY",
                "NODE_TLS_REJECT_UNAUTHORIZED"
            ]
        );
        // a null one keeps the defaults
        let s = NetworkSettings::parse("certificates:\nnetwork:\n").unwrap();
        assert_eq!(s, NetworkSettings::default());
    }

    #[test]
    fn every_variable_in_rccs_order() {
        let mut s = NetworkSettings::parse(
            "certificates:\n  verify-ssl: no\n  ssl-no-revoke: yes\n  legacy-renegotiation-allowed: true\n\
             network:\n  https-proxy: http://proxy:8443\n  http-proxy: http://proxy:8080\n  no-proxy: localhost,.corp\n",
        )
        .unwrap();
        s.pip_rc = Some("/h/piprc".into());
        s.ca_bundle = Some("/h/ca-bundle.pem".into());
        let env = s.variables();
        assert_eq!(
            keys(&env),
            [
                "MAMBA_SSL_NO_REVOKE",
                "MAMBA_SSL_VERIFY",
                "RC_DISABLE_SSL",
                "WDM_SSL_VERIFY",
                "NODE_TLS_REJECT_UNAUTHORIZED",
                "RC_TLS_LEGACY_RENEGOTIATION_ALLOWED",
                "https_proxy",
                "HTTPS_PROXY",
                "http_proxy",
                "HTTP_PROXY",
                "no_proxy",
                "NO_PROXY",
                "PIP_CONFIG_FILE",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "SSL_CERT_FILE",
                "NODE_EXTRA_CA_CERTS"
            ]
        );
        let get = |k: &str| env.iter().find(|(key, _)| key == k).unwrap().1.as_str();
        assert_eq!(get("HTTPS_PROXY"), "http://proxy:8443");
        assert_eq!(get("http_proxy"), "http://proxy:8080");
        assert_eq!(get("NO_PROXY"), "localhost,.corp");
        assert_eq!(get("SSL_CERT_FILE"), "/h/ca-bundle.pem");
        assert_eq!(get("PIP_CONFIG_FILE"), "/h/piprc");
    }

    #[test]
    fn malformed_settings_are_errors() {
        for (text, needle) in [
            (
                "certificates:\n  verify-ssl: maybe\n",
                "certificates.verify-ssl",
            ),
            ("certificates: [a]\n", "certificates"),
            ("network:\n  http-proxy: [a, b]\n", "network.http-proxy"),
            ("- a\n", "not a settings map"),
            ("certificates: {\n", "not valid YAML"),
        ] {
            let e = NetworkSettings::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        // a number is a proxy's text, as yaml.v2 reads it into a string
        let s = NetworkSettings::parse("network:\n  no-proxy: 10\n").unwrap();
        assert_eq!(s.no_proxy, "10");
    }

    #[test]
    fn load_reads_the_home() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(
            NetworkSettings::load(t.path()).unwrap(),
            NetworkSettings::default()
        );
        std::fs::write(t.path().join("ca-bundle.pem"), "pem").unwrap();
        std::fs::create_dir(t.path().join("piprc")).unwrap();
        std::fs::write(t.path().join("settings.yaml"), "network: {http-proxy: p}\n").unwrap();
        let s = NetworkSettings::load(t.path()).unwrap();
        assert_eq!(s.http_proxy, "p");
        assert_eq!(s.ca_bundle, Some(t.path().join("ca-bundle.pem")));
        assert_eq!(s.pip_rc, None, "a directory is no piprc");
        std::fs::write(t.path().join("settings.yaml"), "network: 1\n").unwrap();
        let e = NetworkSettings::load(t.path()).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT);
        assert!(e.to_string().contains("settings.yaml"), "{e}");
    }
}
