//! The page's script and style sheet, compiled into the binary and served under
//! `/admin/static/` with a content hash in the name (`admin.3f2a9c1d.js`), so they can be cached
//! for a year: a new build changes the name. No file is loaded from anywhere else.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A file compiled in.
pub struct Asset {
    pub stem: &'static str,
    pub ext: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    name: LazyLock<String>,
}

impl Asset {
    /// Its name with the content hash.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its URL.
    pub fn url(&self) -> &'static str {
        match (self.stem, self.ext) {
            ("admin", "js") => &JS_URL,
            ("live", "js") => &LIVE_JS_URL,
            ("live", "css") => &LIVE_CSS_URL,
            _ => &CSS_URL,
        }
    }
}

static JS_URL: LazyLock<String> = LazyLock::new(|| format!("/admin/static/{}", JS.name()));
static CSS_URL: LazyLock<String> = LazyLock::new(|| format!("/admin/static/{}", CSS.name()));
static LIVE_JS_URL: LazyLock<String> = LazyLock::new(|| format!("/admin/static/{}", LIVE_JS.name()));
static LIVE_CSS_URL: LazyLock<String> = LazyLock::new(|| format!("/admin/static/{}", LIVE_CSS.name()));

fn hashed(stem: &str, ext: &str, bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{stem}.{hex}.{ext}")
}

macro_rules! asset {
    ($stem:literal, $ext:literal, $ct:literal) => {
        Asset {
            stem: $stem,
            ext: $ext,
            content_type: $ct,
            bytes: include_bytes!(concat!("../../../assets/admin/", $stem, ".", $ext)),
            name: LazyLock::new(|| {
                hashed($stem, $ext, include_bytes!(concat!("../../../assets/admin/", $stem, ".", $ext)))
            }),
        }
    };
}

pub static JS: Asset = asset!("admin", "js", "text/javascript; charset=utf-8");
pub static CSS: Asset = asset!("admin", "css", "text/css; charset=utf-8");
/// F: the mailbox page's "Test connection" and the queue page's preview (live.js).
pub static LIVE_JS: Asset = asset!("live", "js", "text/javascript; charset=utf-8");
pub static LIVE_CSS: Asset = asset!("live", "css", "text/css; charset=utf-8");

/// GET /admin/static/{file}: the file whose hashed name it is, cached for a year.
pub async fn serve(Path(file): Path<String>) -> Response {
    for a in [&JS, &CSS, &LIVE_JS, &LIVE_CSS] {
        if a.name() == file {
            return (
                [(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
                a.bytes,
            )
                .into_response();
        }
    }
    (StatusCode::NOT_FOUND, "no such file").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_carry_the_content_hash() {
        assert!(JS.name().starts_with("admin.") && JS.name().ends_with(".js") && JS.name().len() == "admin..js".len() + 12);
        assert!(CSS.name().ends_with(".css"));
        assert_eq!(JS.url(), format!("/admin/static/{}", JS.name()));
        assert_eq!(CSS.url(), format!("/admin/static/{}", CSS.name()));
        assert_ne!(hashed("a", "js", b"1"), hashed("a", "js", b"2"));
    }
}
