//! Writes a throwaway test PKI for TLS checks: `ca.pem`, `server.{pem,key}`
//! (DNS:localhost, IP:127.0.0.1), `client.{pem,key}` (CN `app`), and from a
//! second CA `foreign-ca.pem`, `foreign.{pem,key}`. Never use these in production.
//!
//! `cargo run --example test_certs -- <dir>`

#[path = "../tests/common/certs.rs"]
mod certs;

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: test_certs <dir>");
        std::process::exit(2);
    };
    let pki = certs::Pki::generate(std::path::Path::new(&dir));
    println!("{}", pki.dir.display());
}
