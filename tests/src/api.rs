//! HTTP replies and the control-plane calls the tests make through Envoy.

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A reply read whole: status, headers, body text and its JSON (or `Null`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a status, failing with the whole reply.
    pub fn expect(&self, status: u16) -> &Reply {
        assert_eq!(self.status, status, "unexpected reply: {self:#?}");
        self
    }

    /// Asserts the exact JSON error of SPEC section 4.
    pub fn expect_error(&self, status: u16, kind: &str, message: &str) -> &Reply {
        self.expect(status);
        let expected = serde_json::json!({"error": {"type": kind, "message": message}});
        assert_eq!(self.json, expected, "wrong error body: {self:#?}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error without JSON content-type: {self:#?}"
        );
        if status == 401 {
            assert_eq!(
                self.header("www-authenticate"),
                Some("Bearer realm=\"keygate\""),
                "401 without WWW-Authenticate: {self:#?}"
            );
        }
        self
    }

    /// The demo upstream's echo of a request header (lowercase name).
    pub fn echoed_header(&self, name: &str) -> Option<&str> {
        self.json["headers"][name].as_str()
    }

    /// A string field of the JSON body.
    pub fn str(&self, field: &str) -> &str {
        self.json[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field:?} in {self:#?}"))
    }
}

/// A registered tenant and its first (all-scopes) key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub tenant_id: String,
    pub api_key: String,
}

impl Tenant {
    pub fn from_reply(reply: &Reply) -> Tenant {
        reply.expect(201);
        Tenant {
            tenant_id: reply.str("tenant_id").to_string(),
            api_key: reply.str("api_key").to_string(),
        }
    }
}
