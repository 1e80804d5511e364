//! The demo pages (`web/`) and the browser SDK (`clients/js/`), embedded in the
//! binary so that one file serves everything. Debug builds read the same files
//! from the source tree, so page edits show without a rebuild.

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// The demo pages, served at `/`.
#[derive(RustEmbed)]
#[folder = "../../web/"]
struct Pages;

/// The browser SDK, served at `/sdk/`.
#[derive(RustEmbed)]
#[folder = "../../clients/js/"]
#[include = "switchboard.js"]
#[include = "switchboard.d.ts"]
struct Sdk;

/// `GET /<path>`: a demo page or asset; `/` and directories serve `index.html`.
pub async fn page(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() || path.ends_with('/') { format!("{path}index.html") } else { path.to_owned() };
    serve::<Pages>(&path, &headers)
}

/// `GET /sdk/<file>`: the browser SDK.
pub async fn sdk(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve::<Sdk>(&file, &headers)
}

/// An embedded file, with an ETag and revalidation on every use.
pub fn serve<Assets: RustEmbed>(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let cached = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let common = [
        (header::ETAG, etag),
        // Revalidate every time: the ETag makes that a cheap 304.
        (header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    // mime_guess takes `.ts` for an MPEG transport stream; ours are TypeScript.
    let mimetype =
        if path.ends_with(".ts") { "application/typescript; charset=utf-8" } else { file.metadata.mimetype() };
    let content_type = (header::CONTENT_TYPE, mimetype.to_owned());
    (common, [content_type], file.data).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
