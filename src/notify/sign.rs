//! The three signatures a delivery may carry, each exactly as its receiver recomputes it.
//!
//! - DingTalk custom robot, 加签: HMAC-SHA256 keyed by the secret over `"<timestamp ms>\n<secret>"`,
//!   base64; sent as the URL parameters `timestamp` and `sign` (URL-encoded by whoever builds the
//!   URL, see [`dingtalk_url`]). DingTalk refuses a timestamp more than an hour from its clock.
//! - Feishu custom bot, 签名校验: HMAC-SHA256 *keyed by* `"<timestamp s>\n<secret>"` over an empty
//!   message, base64; sent as the body fields `timestamp` (a string) and `sign`. The key and the
//!   message are the other way round from DingTalk's, and the timestamp is in seconds.
//! - generic: lowercase hex HMAC-SHA256 keyed by the secret over the exact body bytes, sent as
//!   `X-Xiaoer-Signature`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length (long keys are hashed first), so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("hmac accepts keys of every length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The DingTalk `sign` parameter, before URL encoding.
pub fn dingtalk(secret: &str, timestamp_ms: i64) -> String {
    let string_to_sign = format!("{timestamp_ms}\n{secret}");
    BASE64.encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()))
}

/// The robot's webhook URL with `timestamp` and `sign` added to its query (the base64 `+`, `/`
/// and `=` percent-encoded, as DingTalk expects).
pub fn dingtalk_url(webhook: &Url, secret: &str, timestamp_ms: i64) -> Url {
    let mut url = webhook.clone();
    url.query_pairs_mut()
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &dingtalk(secret, timestamp_ms));
    url
}

/// The Feishu `sign` body field.
pub fn feishu(secret: &str, timestamp_s: i64) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    BASE64.encode(hmac_sha256(key.as_bytes(), b""))
}

/// The generic `X-Xiaoer-Signature` header value.
pub fn generic(secret: &str, body: &[u8]) -> String {
    hmac_sha256(secret.as_bytes(), body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Neither DingTalk nor Feishu publishes a fixed test vector: their docs show the algorithm
    // with the current time. These were computed independently with Python 3's standard library,
    // following the docs' own sample code:
    //
    //   DingTalk: base64.b64encode(hmac.new(secret.encode(), f"{ts}\n{secret}".encode(),
    //             hashlib.sha256).digest()), then urllib.parse.quote_plus for the URL.
    //   Feishu:   base64.b64encode(hmac.new(f"{ts}\n{secret}".encode(), b"",
    //             hashlib.sha256).digest())
    //
    // "this is secret" is the secret of DingTalk's sample; "你的密钥" the placeholder of
    // Feishu's, which also checks the key is taken as UTF-8.

    #[test]
    fn dingtalk_signatures_match_independently_computed_ones() {
        let table = [
            (
                "this is secret",
                1_577_262_236_757,
                "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=",
            ),
            (
                "SECa1b2c3d4e5f6",
                1_796_200_215_250,
                "RlVRoJN4p2fBasDyqMKWNlv7+53ws9fK9j7Yqonw0k4=",
            ),
        ];
        for (secret, timestamp, expected) in table {
            assert_eq!(dingtalk(secret, timestamp), expected, "secret {secret:?}");
        }
    }

    #[test]
    fn dingtalk_url_keeps_the_token_and_percent_encodes_the_sign() {
        let webhook: Url = "https://oapi.dingtalk.com/robot/send?access_token=abc123"
            .parse()
            .unwrap();
        let url = dingtalk_url(&webhook, "this is secret", 1_577_262_236_757);
        assert_eq!(
            url.as_str(),
            "https://oapi.dingtalk.com/robot/send?access_token=abc123\
             &timestamp=1577262236757\
             &sign=hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D"
        );
    }

    #[test]
    fn feishu_signatures_match_independently_computed_ones() {
        let table = [
            (
                "demo-secret",
                1_599_360_473,
                "3/MaVZ8JLIy4TUG+7KSFJqvUkTKd+HWY8g+56DZWq8s=",
            ),
            (
                "你的密钥",
                1_796_200_215,
                "U3Mzc/zuwxe5VmCJhuXBWeBq1gp3hBrqWhZbNda/oSc=",
            ),
        ];
        for (secret, timestamp, expected) in table {
            assert_eq!(feishu(secret, timestamp), expected, "secret {secret:?}");
        }
    }

    #[test]
    fn generic_signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2, the published HMAC-SHA256 vector.
        assert_eq!(
            generic("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // One body byte changed, another signature: the receiver detects tampering.
        assert_ne!(
            generic("Jefe", b"what do ya want for nothing!"),
            generic("Jefe", b"what do ya want for nothing?")
        );
    }
}
