//! The two MIME layers of a token file: the outer S/MIME wrapper around the base64 CMS, and the
//! inner text entity whose body is the token JSON between `BEGIN MESSAGE` / `END MESSAGE` lines.
//!
//! MIME here is a handful of header lines, so it is read directly rather than through a mail
//! parser; the reading is lenient about what varies between producers (line ends, header case
//! and order, folded headers, base64 line width and padding).

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use crate::{MAX_FILE_BYTES, TokenFileError};

const BEGIN_MESSAGE: &str = "-----BEGIN MESSAGE-----";
const END_MESSAGE: &str = "-----END MESSAGE-----";

/// First byte of a DER/BER `SEQUENCE`, which is how every CMS `ContentInfo` starts.
const SEQUENCE_TAG: u8 = 0x30;

/// Base64 as S/MIME writers produce it: padding present or not.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Header fields of the outer wrapper, as Apple Business writes them.
const OUTER_HEADERS: &str = concat!(
    "Content-Type: application/pkcs7-mime; name=\"smime.p7m\"; smime-type=enveloped-data\r\n",
    "Content-Transfer-Encoding: base64\r\n",
    "Content-Disposition: attachment; filename=\"smime.p7m\"\r\n",
    "Content-Description: S/MIME Encrypted Message\r\n",
    "\r\n",
);

/// Header fields of the inner entity that holds the JSON.
const INNER_HEADERS: &str = concat!(
    "Content-Type: text/plain;charset=UTF-8\r\n",
    "Content-Transfer-Encoding: 7bit\r\n",
    "\r\n",
);

/// MIME's line length limit for base64 bodies.
const BASE64_LINE: usize = 76;

/// The CMS (BER or DER) inside an uploaded file.
pub(crate) fn unwrap_outer(file: &[u8]) -> Result<Vec<u8>, TokenFileError> {
    if file.len() > MAX_FILE_BYTES {
        return Err(TokenFileError::TooLarge {
            limit_bytes: MAX_FILE_BYTES,
        });
    }
    // Someone may have converted the file to binary (`openssl smime -outform DER`).
    if file.first() == Some(&SEQUENCE_TAG) {
        return Ok(file.to_vec());
    }
    let text = std::str::from_utf8(file).map_err(|_| TokenFileError::NotATokenFile)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    // `declared` is whether the headers say this is S/MIME; once they do, anything wrong after
    // them means a damaged token file rather than some other kind of file.
    let (declared, body) = match split_entity(text) {
        Some((headers, body)) => {
            if let Some(content_type) = header(&headers, "content-type")
                && !content_type.to_ascii_lowercase().contains("pkcs7-mime")
            {
                return Err(TokenFileError::NotATokenFile);
            }
            if let Some(encoding) = header(&headers, "content-transfer-encoding")
                && !encoding.eq_ignore_ascii_case("base64")
            {
                return Err(TokenFileError::NotATokenFile);
            }
            (header(&headers, "content-type").is_some(), body)
        }
        None => (false, text),
    };

    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(if declared {
            TokenFileError::Malformed {
                what: "its encrypted content",
            }
        } else {
            TokenFileError::NotATokenFile
        });
    }
    let refuse = |what| {
        if declared {
            TokenFileError::Malformed { what }
        } else {
            TokenFileError::NotATokenFile
        }
    };
    let cms = LENIENT_BASE64
        .decode(compact.as_bytes())
        .map_err(|_| refuse("its base64 text"))?;
    if cms.first() != Some(&SEQUENCE_TAG) {
        return Err(refuse("its encrypted content"));
    }
    Ok(cms)
}

/// The JSON between the `BEGIN MESSAGE` / `END MESSAGE` lines of the decrypted entity, its lines
/// joined. The entity's header fields carry nothing we need, so they are skipped, not parsed.
/// `None` says only that the plaintext is not a token message: why must not reach the caller
/// (see [`TokenFileError::Undecryptable`]).
pub(crate) fn unwrap_inner(plaintext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(plaintext).ok()?;
    let start = text.find(BEGIN_MESSAGE)? + BEGIN_MESSAGE.len();
    let rest = &text[start..];
    let end = rest.find(END_MESSAGE)?;
    // Joined without separators, as other readers do, in case a writer wraps long JSON lines.
    let json: Vec<u8> = rest[..end]
        .bytes()
        .filter(|byte| *byte != b'\r' && *byte != b'\n')
        .collect();
    Some(Zeroizing::new(json))
}

/// The decrypted entity Apple puts inside the CMS: header fields, then the JSON between markers.
pub(crate) fn wrap_inner(json: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut message = Vec::with_capacity(INNER_HEADERS.len() + json.len() + 64);
    message.extend_from_slice(INNER_HEADERS.as_bytes());
    message.extend_from_slice(BEGIN_MESSAGE.as_bytes());
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(json);
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(END_MESSAGE.as_bytes());
    message.extend_from_slice(b"\r\n");
    Zeroizing::new(message)
}

/// The file as downloaded: S/MIME header fields, then the CMS in base64 lines.
pub(crate) fn wrap_outer(cms: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(cms);
    let mut file = Vec::with_capacity(OUTER_HEADERS.len() + encoded.len() * 78 / 76 + 2);
    file.extend_from_slice(OUTER_HEADERS.as_bytes());
    for line in encoded.as_bytes().chunks(BASE64_LINE) {
        file.extend_from_slice(line);
        file.extend_from_slice(b"\r\n");
    }
    file
}

/// Header fields (lower-cased names) and body of a MIME entity, or `None` when the text does
/// not start with a header field and so is not a MIME entity at all.
fn split_entity(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut rest = text.trim_start_matches(['\r', '\n']);
    while !rest.is_empty() {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = after;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // A folded header field continues the previous one.
            let (_, value) = headers.last_mut()?;
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let is_field_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !is_field_name {
            return None;
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    (!headers.is_empty()).then_some((headers, rest))
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMS: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x00, 0xff, 0xfe];

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn outer_round_trips() {
        assert_eq!(unwrap_outer(&wrap_outer(CMS)).unwrap(), CMS);
    }

    #[test]
    fn outer_is_lenient_about_line_ends_case_order_and_width() {
        let encoded = b64(CMS);
        let (head, tail) = encoded.split_at(3);
        let variants = [
            format!(
                "content-transfer-encoding: BASE64\nCONTENT-TYPE: application/x-pkcs7-mime;\n\tsmime-type=enveloped-data\n\n{head}\n{tail}\n"
            ),
            format!("MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime\r\n\r\n{encoded}"),
            format!(
                "Content-Type: application/pkcs7-mime\n\n{}",
                encoded.trim_end_matches('=')
            ),
            // No headers at all: a bare base64 body.
            format!("{head}\r\n{tail}\r\n"),
        ];
        for variant in variants {
            assert_eq!(
                unwrap_outer(variant.as_bytes()).unwrap(),
                CMS,
                "{variant:?}"
            );
        }
        // The binary CMS itself.
        assert_eq!(unwrap_outer(CMS).unwrap(), CMS);
    }

    #[test]
    fn outer_tells_other_files_from_damaged_token_files() {
        let not_tokens: [&[u8]; 6] = [
            b"",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            b"{\"consumer_key\": \"CK_1\"}",
            b"Content-Type: text/plain\n\nhello",
            b"Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: binary\n\nMIIB",
            &[0xff, 0xfe, 0x00, 0x30],
        ];
        for file in not_tokens {
            assert!(
                matches!(unwrap_outer(file), Err(TokenFileError::NotATokenFile)),
                "{:?}",
                String::from_utf8_lossy(file)
            );
        }
        let damaged = [
            "Content-Type: application/pkcs7-mime\n\n".to_owned(),
            "Content-Type: application/pkcs7-mime\n\nMIIB*".to_owned(),
            format!("Content-Type: application/pkcs7-mime\n\n{}", b64(b"hello")),
        ];
        for file in damaged {
            assert!(
                matches!(
                    unwrap_outer(file.as_bytes()),
                    Err(TokenFileError::Malformed { .. })
                ),
                "{file:?}"
            );
        }
        let huge = vec![b'A'; MAX_FILE_BYTES + 1];
        assert!(matches!(
            unwrap_outer(&huge),
            Err(TokenFileError::TooLarge { .. })
        ));
    }

    #[test]
    fn inner_round_trips_and_tolerates_missing_headers_and_wrapping() {
        let json = br#"{"a":"b"}"#;
        assert_eq!(unwrap_inner(&wrap_inner(json)).unwrap().as_slice(), json);
        let bare = b"-----BEGIN MESSAGE-----\n{\"a\":\n\"b\"}\n-----END MESSAGE-----\n";
        assert_eq!(unwrap_inner(bare).unwrap().as_slice(), json);
    }

    #[test]
    fn inner_refuses_other_messages() {
        for plaintext in [
            &b"hello\n"[..],
            b"Content-Type: text/plain\r\n\r\nhello\r\n",
            b"-----BEGIN MESSAGE-----\n{}\n",
            &[0xc3, 0x28, 0x00],
        ] {
            assert!(unwrap_inner(plaintext).is_none());
        }
    }
}
