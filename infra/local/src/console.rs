//! The admin console on the runner: the console function's routes (the
//! files compiled into it) on the API's address, outside the JWT check as
//! on AWS (`Auth: NONE` in template.yaml), with the development sign-in.
//!
//! The page signs in with a development token: paste the one `serve` or
//! `demo` prints, or open [`sign_in_url`], which hands it over in the URL's
//! fragment (never sent to a server; the page keeps it in its tab's
//! session storage and removes it from the address bar).

use axum::Router;

/// The console's routes as the runner serves them.
pub fn routes() -> Router {
    adesync_console::routes(adesync_console::ConsoleConfig::dev())
}

/// The console's address on the runner at `api_url`.
pub fn url(api_url: &str) -> String {
    format!("{api_url}/console")
}

/// The console's address that signs in with the development token `jwt`.
pub fn sign_in_url(api_url: &str, jwt: &str) -> String {
    format!("{}#dev-token={jwt}", url(api_url))
}
