//! The filter configuration JSON (`keygate::config::FilterConfig::from_json`):
//! any bytes give a configuration or an error naming the field, never a
//! panic; an accepted one makes a policy that decides a request.

#![no_main]

use keygate::config::FilterConfig;
use keygate::decision::{Policy, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match FilterConfig::from_json(data) {
        Ok(config) => {
            let policy = Policy::from(&config);
            let headers = [("x-api-key", "rk_test_x")];
            let request = Request {
                method: "GET",
                path: "/v1/things?api_key=x",
                headers: &headers,
            };
            let _ = policy.decide(None, &request, 0);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
