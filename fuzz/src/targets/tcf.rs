//! The TC string decoder: any text is decoded or refused, never a panic,
//! and a decoded string's vendor sets are ascending and answer `contains`
//! for every id they list.

use waymark::consent::tcf::{decode, VendorSet};

/// At most this many ids are walked per set, so one input stays cheap.
const WALK: usize = 4096;

fn check(set: &VendorSet) {
    let mut last = 0u16;
    let mut walked = 0;
    for id in set.ids().take(WALK) {
        assert!(id > last, "vendor ids not ascending: {id} after {last}");
        assert!(set.contains(id), "vendor {id} listed but not contained");
        last = id;
        walked += 1;
    }
    assert!(!set.contains(0), "vendor id 0 is never valid");
    assert!(walked == WALK || walked == set.len(), "len() disagrees with ids()");
    assert_eq!(set.is_empty(), set.ids().next().is_none());
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tc) = decode(text) else {
        return;
    };
    check(&tc.vendor_consents);
    check(&tc.vendor_legitimate_interests);
    for restriction in &tc.publisher_restrictions {
        check(&restriction.vendors);
    }
    if let Some(disclosed) = &tc.disclosed_vendors {
        check(disclosed);
    }
    // The accessors answer for any id, in range or not.
    for id in [0u8, 1, 10, 24, 25, 255] {
        let _ = tc.purpose_consent(id);
    }
    let _ = (tc.consent_language(), tc.publisher_country_code());
    // Decoding is a pure function of the text.
    assert_eq!(decode(text).ok().as_ref(), Some(&tc));
}
