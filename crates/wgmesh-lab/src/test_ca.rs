//! A private certificate authority for tests: a CA and a server
//! certificate it signed for given IP addresses, made with openssl(1), so
//! that HTTPS and WSS are tested the way an operator runs them (the client
//! trusts the CA through `--ca-file`, and refuses the server without it).
//!
//! It is not for anything but tests: the keys are unencrypted files, valid a day.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::LabError;
use crate::command::run;

/// The files [`make`] writes.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate chain and private key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// P-256 keys: quick to make, and what rustls on ring accepts.
const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// `openssl ARGS` in `dir`, where its files are named relative to it.
fn openssl(dir: &Path, args: &[&str]) -> Result<(), LabError> {
    run(Command::new("openssl").args(args).current_dir(dir)).map(|_| ())
}

/// Writes a CA and a certificate for `ips` signed by it into `dir`.
pub fn make(dir: &Path, ips: &[IpAddr]) -> Result<TestCa, LabError> {
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=wgmesh-test-ca"];
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(EC);
    openssl(dir, &ca)?;
    let mut csr = vec![
        "req",
        "-subj",
        "/CN=wgmesh-test",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ];
    csr.extend(EC);
    openssl(dir, &csr)?;
    let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .map_err(|source| LabError::Io { path: ext, source })?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
    )?;
    Ok(TestCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    })
}
