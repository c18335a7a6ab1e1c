//! Test certificates, made with the `openssl` command line into a temp directory:
//!
//! - the proxy's CA (a TLS-intercepting proxy mints server certificates from it; the agent Envoy
//!   trusts it);
//! - the server's CA and a server certificate for one DNS name (the server Envoy's TLS listener;
//!   the proxy trusts this CA when it re-originates TLS);
//! - a bundle of both CAs (an agent that must work whether or not the proxy intercepts TLS).
//!
//! Everything is world-readable (squid's helpers run as an unprivileged user); the keys are
//! throwaway test keys.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `openssl` binary (`$OPENSSL_BIN` overrides).
pub fn openssl_bin() -> PathBuf {
    crate::util::env_path("OPENSSL_BIN", "openssl")
}

pub struct TestPki {
    /// The server's TLS name (SAN DNS of the server certificate).
    pub server_name: String,
    pub proxy_ca_cert: PathBuf,
    pub proxy_ca_key: PathBuf,
    pub server_ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// proxy CA + server CA.
    pub both_cas: PathBuf,
    dir: tempfile::TempDir,
}

fn openssl(args: &[&str], cwd: &Path) -> Result<(), String> {
    let out = Command::new(openssl_bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| format!("run {}: {e}", openssl_bin().display()))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn self_signed_ca(cn: &str, name: &str, dir: &Path) -> Result<(), String> {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    )
}

impl TestPki {
    /// Make both CAs and a server certificate for `server_name` (about 0.5 s).
    pub fn generate(server_name: &str) -> Result<TestPki, String> {
        let dir = crate::util::temp_dir("grpc-bridge-pki-")?;
        let d = dir.path();
        self_signed_ca("grpc-bridge test proxy CA", "proxy-ca", d)?;
        self_signed_ca("grpc-bridge test server CA", "server-ca", d)?;
        leaf_cert(
            d,
            "server",
            server_name,
            &format!("DNS:{server_name}"),
            "serverAuth",
            "2",
        )?;
        let mut both = std::fs::read(d.join("proxy-ca.pem")).map_err(|e| e.to_string())?;
        both.extend(std::fs::read(d.join("server-ca.pem")).map_err(|e| e.to_string())?);
        std::fs::write(d.join("both-cas.pem"), both).map_err(|e| e.to_string())?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        for e in std::fs::read_dir(d).map_err(|e| e.to_string())?.flatten() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
        }
        Ok(TestPki {
            server_name: server_name.to_string(),
            proxy_ca_cert: d.join("proxy-ca.pem"),
            proxy_ca_key: d.join("proxy-ca.key"),
            server_ca_cert: d.join("server-ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            both_cas: d.join("both-cas.pem"),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate (mTLS) signed by the server CA, with `uri_san` as its URI SAN and
    /// `CN=cn`: returns (certificate, key) paths.
    pub fn client_cert(&self, cn: &str, uri_san: &str) -> Result<(PathBuf, PathBuf), String> {
        self.client_cert_named(cn, cn, &format!("URI:{uri_san}"))
    }

    /// A client certificate (file names from `name`) with subject `CN=cn` and the one
    /// subjectAltName `san` (`DNS:...` or `URI:...`): (certificate, key).
    pub fn client_cert_named(
        &self,
        name: &str,
        cn: &str,
        san: &str,
    ) -> Result<(PathBuf, PathBuf), String> {
        let d = self.dir.path();
        leaf_cert(d, name, cn, san, "clientAuth", "3")?;
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        for f in [&key, &pem] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
        }
        Ok((d.join(pem), d.join(key)))
    }
}

/// A key and certificate signed by the server CA in `d`: `<name>.key`, `<name>.pem` (with
/// `<name>.csr`, `<name>.ext` on the way), subject `CN=cn`, the one subjectAltName `san`
/// (`DNS:...`, `URI:...`) and extended key usage `usage`.
fn leaf_cert(
    d: &Path,
    name: &str,
    cn: &str,
    san: &str,
    usage: &str,
    serial: &str,
) -> Result<(), String> {
    let (key, csr, ext, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
        d,
    )?;
    std::fs::write(
        d.join(&ext),
        format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "server-ca.pem",
            "-CAkey",
            "server-ca.key",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
        d,
    )
}
