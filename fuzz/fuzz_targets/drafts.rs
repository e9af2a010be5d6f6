//! The control plane's request bodies (`drafts`, over `body`): key and
//! tenant creation, key patches and the rotation grace. Any bytes give a draft or a 400
//! naming the field (its message names it too), never a panic; so do the
//! checks of a draft against a minting policy.

#![no_main]

use keygate_control_plane::drafts::{grace_seconds, KeyDraft, KeyPatchDraft, TenantDraft};
use keygate_control_plane::errors::ApiError;
use keygate_control_plane::policy::MintPolicy;
use libfuzzer_sys::fuzz_target;

fn assert_names_its_field<T>(result: Result<T, ApiError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(ApiError::Invalid { field, message }) => {
            // The field may be "" (an unknown field of that name).
            assert!(message.contains(&field), "{field}: {message}");
            None
        }
        Err(other) => panic!("not a 400 naming the field: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let scopes = vec!["memory:read".to_string(), "memory:write".to_string()];
    let tiers = vec!["free".to_string(), "pro".to_string()];
    let policy = MintPolicy::new("rk", scopes, tiers).expect("a valid policy");
    if let Some(draft) = assert_names_its_field(KeyDraft::from_json(data)) {
        assert_names_its_field(draft.check(&policy, 1_700_000_000));
    }
    if let Some(draft) = assert_names_its_field(KeyPatchDraft::from_json(data)) {
        assert_names_its_field(draft.check(&policy, 1_700_000_000));
    }
    if let Some(draft) = assert_names_its_field(TenantDraft::from_json(data)) {
        assert_names_its_field(draft.check());
    }
    assert_names_its_field(grace_seconds(data));
});
