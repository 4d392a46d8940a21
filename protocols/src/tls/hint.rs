//! Plain-words hints for the TLS errors people meet first.
//!
//! rustls names what failed ("invalid peer certificate: UnknownIssuer"),
//! not what to do about it. [`hint`] adds one sentence for the mistakes
//! that come up again and again when setting up a private CA, and the
//! TLS layer appends it to the failure's reason, so it shows in the
//! `Display` of the `io::Error` a failed handshake reports
//! ([`connect_tls`](super::connect_tls), `connection_lost`):
//!
//! | rustls error | hint |
//! |---|---|
//! | a CA certificate served as the server's (or client's) own (`CaUsedAsEndEntity`) | [`HINT_CA_USED_AS_END_ENTITY`] |
//! | a certificate for other names (`NotValidForName`) | [`HINT_NAME_MISMATCH`] |
//! | an issuer not among the trusted roots (`UnknownIssuer`) | [`HINT_UNKNOWN_ISSUER`] |
//! | signed by another key than the trusted CA of that name (`BadSignature`) | [`HINT_BAD_SIGNATURE`] |
//! | expired or not yet valid | [`HINT_EXPIRED`] |
//! | the peer refused our certificate (an `UnknownCA` or `BadCertificate` alert) | [`HINT_PEER_REJECTED`] |

use rustls::{AlertDescription, CertificateError, Error};

/// The hint for a CA certificate used as a server's (or client's) own
/// certificate: webpki refuses a certificate with `CA:TRUE` as an end
/// entity, even when it is itself a trusted root.
pub const HINT_CA_USED_AS_END_ENTITY: &str =
    "this certificate is a CA; trust it as a root and serve a leaf it signed";
/// The hint for a certificate that does not name the host.
pub const HINT_NAME_MISMATCH: &str = "the certificate does not list the name we connected to \
     in its subjectAltName; connect with a name it lists, or issue a certificate for this name";
/// The hint for a certificate whose issuer is not trusted.
pub const HINT_UNKNOWN_ISSUER: &str = "the certificate was not signed by a trusted root; \
     add the CA that signed it to the roots (e.g. client_config(&[ca], ..) or \
     HttpClientConfig::with_extra_roots), or have the server send its intermediates";
/// The hint for a certificate whose signature does not verify against
/// the trusted CA that bears its issuer's name (typically a CA made again
/// with a new key under the same name).
pub const HINT_BAD_SIGNATURE: &str = "the certificate's signature does not verify against the \
     trusted CA of that name (was the CA made again with a new key?); trust the CA that really \
     signed it";
/// The hint for an expired or not-yet-valid certificate.
pub const HINT_EXPIRED: &str =
    "the certificate is outside its validity period; renew it, or check this machine's clock";
/// The hint for a peer that refused our certificate.
pub const HINT_PEER_REJECTED: &str =
    "the peer refused our certificate; its error (on its side) says why";

/// The hint for `error`, if it is one of the common mistakes above.
///
/// ```
/// use gyre_protocols::tls::{hint, HINT_UNKNOWN_ISSUER};
/// use rustls::{CertificateError, Error};
///
/// let e = Error::InvalidCertificate(CertificateError::UnknownIssuer);
/// assert_eq!(hint(&e), Some(HINT_UNKNOWN_ISSUER));
/// assert_eq!(hint(&Error::DecryptError), None);
/// ```
pub fn hint(error: &Error) -> Option<&'static str> {
    match error {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => Some(HINT_UNKNOWN_ISSUER),
            CertificateError::BadSignature => Some(HINT_BAD_SIGNATURE),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Some(HINT_NAME_MISMATCH)
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Some(HINT_EXPIRED),
            // rustls maps webpki errors it has no variant for to `Other`,
            // holding the webpki error itself.
            CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => Some(HINT_CA_USED_AS_END_ENTITY),
                _ => None,
            },
            _ => None,
        },
        Error::AlertReceived(AlertDescription::UnknownCA | AlertDescription::BadCertificate) => {
            Some(HINT_PEER_REJECTED)
        }
        _ => None,
    }
}

/// `reason` with the hint for `error` appended, if there is one.
pub(crate) fn with_hint(reason: String, error: &Error) -> String {
    match hint(error) {
        Some(hint) => format!("{reason} (hint: {hint})"),
        None => reason,
    }
}
