//! A local certificate authority for one site: ECDSA P-256 keys, a CA certificate, the hub's
//! server certificate and client certificates for gateways, as PEM files in one directory.
//! Private keys are written with mode 0600.

use crate::{GATEWAY_URI_PREFIX, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA certificate (what clients trust: `curl --cacert`).
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca-key.pem";
/// The hub's server certificate.
pub const HUB_CERT: &str = "hub.pem";
/// The hub's private key.
pub const HUB_KEY: &str = "hub-key.pem";

const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 825;

/// The files of a site's PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub hub_cert: PathBuf,
    pub hub_key: PathBuf,
}

impl PkiFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            hub_cert: dir.join(HUB_CERT),
            hub_key: dir.join(HUB_KEY),
        }
    }

    fn all_exist(&self) -> bool {
        [&self.ca_cert, &self.ca_key, &self.hub_cert, &self.hub_key]
            .iter()
            .all(|p| p.is_file())
    }
}

/// A gateway's client certificate and key files in `dir`.
pub fn gateway_files(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("gateway-{id}.pem")),
        dir.join(format!("gateway-{id}-key.pem")),
    )
}

/// Creates a CA and a hub certificate in `dir`, valid for localhost, 127.0.0.1, ::1 and
/// `hosts` (DNS names or IP addresses). Refuses to replace an existing CA.
pub fn init(dir: &Path, hosts: &[String]) -> Result<PkiFiles, TlsError> {
    let files = PkiFiles::in_dir(dir);
    if files.ca_cert.exists() || files.ca_key.exists() {
        return Err(TlsError::Exists(files.ca_cert));
    }
    create_dir(dir)?;
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // Each CA gets a name of its own (from its public key), so certificates of two sites
    // never look issued by the same authority.
    let tag: String = ca_key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    ca.distinguished_name
        .push(DnType::CommonName, format!("Vigil local CA {tag}"));
    ca.distinguished_name
        .push(DnType::OrganizationName, "Vigil");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, CA_DAYS);
    let ca_cert = ca.self_signed(&ca_key)?;
    write_file(&files.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
    write_file(&files.ca_cert, ca_cert.pem().as_bytes(), false)?;
    issue_hub(dir, hosts)?;
    Ok(files)
}

/// The site's PKI in `dir`: reused when all its files exist, created otherwise. True when
/// it was created now.
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<(PkiFiles, bool), TlsError> {
    let files = PkiFiles::in_dir(dir);
    if files.all_exist() {
        return Ok((files, false));
    }
    if files.ca_cert.exists() && files.ca_key.exists() {
        issue_hub(dir, hosts)?;
        return Ok((files, true));
    }
    Ok((init(dir, hosts)?, true))
}

/// (Re)issues the hub's server certificate from the CA in `dir`.
pub fn issue_hub(dir: &Path, hosts: &[String]) -> Result<PkiFiles, TlsError> {
    let files = PkiFiles::in_dir(dir);
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
            names.push(h.to_owned());
        }
    }
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Vigil hub");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    issue(&files, params, &files.hub_cert, &files.hub_key)?;
    Ok(files)
}

/// Issues a client certificate for gateway `id` (subject CN and SAN URI
/// `urn:vigil:gateway:<id>`) from the CA in `dir`; its (certificate, key) files.
pub fn issue_gateway(dir: &Path, id: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(TlsError::Name(id.to_owned()));
    }
    let files = PkiFiles::in_dir(dir);
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, id);
    params.subject_alt_names = vec![SanType::URI(
        format!("{GATEWAY_URI_PREFIX}{id}").try_into()?,
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let (cert, key) = gateway_files(dir, id);
    issue(&files, params, &cert, &key)?;
    Ok((cert, key))
}

fn issue(
    files: &PkiFiles,
    mut params: CertificateParams,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let ca_pem = read_string(&files.ca_cert)?;
    let ca_key = KeyPair::from_pem(&read_string(&files.ca_key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    validity(&mut params, LEAF_DAYS);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &issuer)?;
    write_file(key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(cert_path, cert.pem().as_bytes(), false)?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks that lag behind the issuer's.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn read_string(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename; `private` files get mode 0600 from the start.
fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let _ = std::fs::remove_file(&tmp);
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientAuth, ServerTls, load_certs, peer_identity, server_config};
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use std::sync::Arc;

    fn roots(ca: &Path) -> Arc<rustls::RootCertStore> {
        let mut r = rustls::RootCertStore::empty();
        for c in load_certs(ca).expect("ca") {
            r.add(c).expect("add");
        }
        Arc::new(r)
    }

    #[test]
    fn hub_certificate_chains_to_the_ca_for_every_local_name_and_extra_hosts() {
        let d = tempfile::tempdir().expect("dir");
        let files = init(d.path(), &["hub.ward.example".into(), "10.1.2.3".into()]).expect("init");
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots(&files.ca_cert), crate::provider())
                .build()
                .expect("verifier");
        let chain = load_certs(&files.hub_cert).expect("hub cert");
        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "hub.ward.example",
            "10.1.2.3",
        ] {
            let sn = ServerName::try_from(name).expect("name");
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &sn, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = ServerName::try_from("elsewhere.example").expect("name");
        assert!(
            verifier
                .verify_server_cert(&chain[0], &[], &other, &[], UnixTime::now())
                .is_err()
        );
        // A second CA does not vouch for this hub.
        let d2 = tempfile::tempdir().expect("dir");
        let other_ca = init(d2.path(), &[]).expect("init");
        let foreign = WebPkiServerVerifier::builder_with_provider(
            roots(&other_ca.ca_cert),
            crate::provider(),
        )
        .build()
        .expect("verifier");
        let local = ServerName::try_from("localhost").expect("name");
        assert!(
            foreign
                .verify_server_cert(&chain[0], &[], &local, &[], UnixTime::now())
                .is_err()
        );
        // The server configuration loads from the files.
        server_config(&ServerTls {
            cert_file: files.hub_cert.clone(),
            key_file: files.hub_key.clone(),
            client_ca_file: Some(files.ca_cert.clone()),
            client_auth: ClientAuth::Required,
        })
        .expect("server config");
    }

    #[test]
    fn gateway_certificate_is_a_client_certificate_naming_the_gateway() {
        let d = tempfile::tempdir().expect("dir");
        let files = init(d.path(), &[]).expect("init");
        let (cert, _key) = issue_gateway(d.path(), "ward-3").expect("issue");
        let chain = load_certs(&cert).expect("cert");
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(&files.ca_cert), crate::provider())
                .build()
                .expect("verifier");
        verifier
            .verify_client_cert(&chain[0], &[], UnixTime::now())
            .expect("chains to the CA");
        assert_eq!(peer_identity(&chain[0]).as_deref(), Some("ward-3"));
        // The hub certificate is not valid for client authentication.
        let hub = load_certs(&files.hub_cert).expect("hub");
        assert!(
            verifier
                .verify_client_cert(&hub[0], &[], UnixTime::now())
                .is_err()
        );
        assert!(matches!(
            issue_gateway(d.path(), "../etc"),
            Err(TlsError::Name(_))
        ));
    }

    #[test]
    fn keys_are_private_and_init_never_replaces_a_ca_but_ensure_reuses_it() {
        let d = tempfile::tempdir().expect("dir");
        let files = init(d.path(), &[]).expect("init");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for k in [&files.ca_key, &files.hub_key] {
                let mode = std::fs::metadata(k).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", k.display());
            }
            let (_, key) = issue_gateway(d.path(), "g1").expect("issue");
            let mode = std::fs::metadata(key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let before = std::fs::read(&files.ca_cert).expect("read");
        assert!(matches!(init(d.path(), &[]), Err(TlsError::Exists(_))));
        let (again, created) = ensure(d.path(), &[]).expect("ensure");
        assert!(!created);
        assert_eq!(again, files);
        assert_eq!(std::fs::read(&files.ca_cert).expect("read"), before);
        // A lost hub certificate is reissued from the same CA.
        std::fs::remove_file(&files.hub_cert).expect("rm");
        let (_, created) = ensure(d.path(), &[]).expect("ensure");
        assert!(created);
        assert_eq!(std::fs::read(&files.ca_cert).expect("read"), before);
    }

    #[test]
    fn settings_are_checked_and_bad_files_are_clear_errors() {
        let bad = ServerTls {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            client_ca_file: None,
            client_auth: ClientAuth::Required,
        };
        assert!(matches!(bad.validate(), Err(TlsError::Config(_))));
        assert!(matches!(
            ServerTls::default().validate(),
            Err(TlsError::Config(_))
        ));
        let d = tempfile::tempdir().expect("dir");
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let e = server_config(&ServerTls {
            cert_file: junk.clone(),
            key_file: junk.clone(),
            client_ca_file: None,
            client_auth: ClientAuth::None,
        })
        .expect_err("junk");
        assert!(e.to_string().contains("junk.pem"), "{e}");
        let missing = d.path().join("missing.pem");
        let e = crate::load_key(&missing).expect_err("missing");
        assert!(matches!(e, TlsError::Read { .. }));
    }
}
