//! The decoder against strings made by IAB's own encoder, and against
//! malformed input.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::*;

/// Runs `tests/node/tcf/make.js` (IAB's `@iabtechlabtcf/core` under Node)
/// and returns its fixtures. `cargo xtask test` installs the package.
fn iab_fixtures(count: usize) -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/node/tcf");
    assert!(
        dir.join("node_modules/@iabtechlabtcf/core").exists(),
        "IAB's encoder is not installed: run `cargo xtask test` or `npm ci` in {}",
        dir.display()
    );
    let out = Command::new("node")
        .arg("make.js")
        .arg(count.to_string())
        .current_dir(&dir)
        .output()
        .expect("node runs (cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "make.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("make.js prints JSON")
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id"))
        .collect()
}

fn mask_ids(mask: u64, n: u64) -> Vec<u64> {
    (1..=n).filter(|i| mask & (1 << (i - 1)) != 0).collect()
}

fn set_ids(set: &VendorSet) -> Vec<u64> {
    set.ids().map(u64::from).collect()
}

#[test]
fn reads_exactly_what_iabs_encoder_wrote() {
    let fixtures = iab_fixtures(60);
    let (mut ranged, mut bitfields, mut restricted, mut disclosed, mut publisher) = (0, 0, 0, 0, 0);
    for f in &fixtures {
        let s = f["tc"].as_str().expect("tc");
        let tc = decode(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let n = |k: &str| f[k].as_u64().expect(k);
        let b = |k: &str| f[k].as_bool().expect(k);
        assert_eq!(u64::from(tc.version), n("version"), "{s}");
        assert_eq!(tc.created_ds, n("created_ds"), "{s}");
        assert_eq!(tc.last_updated_ds, n("last_updated_ds"), "{s}");
        assert_eq!(u64::from(tc.cmp_id), n("cmp_id"), "{s}");
        assert_eq!(u64::from(tc.cmp_version), n("cmp_version"), "{s}");
        assert_eq!(u64::from(tc.consent_screen), n("consent_screen"), "{s}");
        assert_eq!(tc.consent_language(), f["consent_language"], "{s}");
        assert_eq!(
            u64::from(tc.vendor_list_version),
            n("vendor_list_version"),
            "{s}"
        );
        assert_eq!(u64::from(tc.policy_version), n("policy_version"), "{s}");
        assert_eq!(tc.is_service_specific, b("is_service_specific"), "{s}");
        assert_eq!(
            tc.use_non_standard_texts,
            b("use_non_standard_texts"),
            "{s}"
        );
        assert_eq!(tc.purpose_one_treatment, b("purpose_one_treatment"), "{s}");
        assert_eq!(
            tc.publisher_country_code(),
            f["publisher_country_code"],
            "{s}"
        );
        assert_eq!(
            mask_ids(u64::from(tc.special_feature_opt_ins), 12),
            ids(&f["special_feature_opt_ins"]),
            "{s}"
        );
        assert_eq!(
            mask_ids(u64::from(tc.purpose_consents), 24),
            ids(&f["purpose_consents"]),
            "{s}"
        );
        assert_eq!(
            mask_ids(u64::from(tc.purpose_legitimate_interests), 24),
            ids(&f["purpose_legitimate_interests"]),
            "{s}"
        );
        for p in 1..=24u8 {
            assert_eq!(
                tc.purpose_consent(p),
                ids(&f["purpose_consents"]).contains(&u64::from(p))
            );
        }
        assert_eq!(
            set_ids(&tc.vendor_consents),
            ids(&f["vendor_consents"]),
            "{s}"
        );
        assert_eq!(
            u64::from(tc.vendor_consents.max_id),
            n("vendor_consents_max")
        );
        assert_eq!(
            set_ids(&tc.vendor_legitimate_interests),
            ids(&f["vendor_legitimate_interests"]),
            "{s}"
        );
        for id in ids(&f["vendor_consents"]) {
            assert!(tc.vendor_consent(id as u16), "{s}: vendor {id}");
        }
        for section in [&tc.vendor_consents, &tc.vendor_legitimate_interests] {
            if section.range_encoded {
                ranged += 1;
            } else {
                bitfields += 1;
            }
        }
        // Restrictions: IAB groups them by (purpose, type).
        let mut ours: Vec<(u64, u64, Vec<u64>)> = Vec::new();
        for r in &tc.publisher_restrictions {
            let kind = match r.restriction {
                RestrictionType::NotAllowed => 0,
                RestrictionType::RequireConsent => 1,
                RestrictionType::RequireLegitimateInterest => 2,
                RestrictionType::Undefined => 3,
            };
            ours.push((u64::from(r.purpose_id), kind, set_ids(&r.vendors)));
        }
        ours.sort();
        let theirs: Vec<(u64, u64, Vec<u64>)> = f["publisher_restrictions"]
            .as_array()
            .expect("restrictions")
            .iter()
            .map(|r| {
                let mut v = ids(&r["vendors"]);
                v.sort();
                (
                    r["purpose"].as_u64().expect("purpose"),
                    r["type"].as_u64().expect("type"),
                    v,
                )
            })
            .collect();
        assert_eq!(ours, theirs, "{s}");
        restricted += usize::from(!ours.is_empty());
        match (&tc.disclosed_vendors, &f["disclosed_vendors"]) {
            (None, Value::Null) => {}
            (Some(set), list) => {
                disclosed += 1;
                assert_eq!(set_ids(set), ids(list), "{s}");
            }
            (None, _) => panic!("{s}: disclosed-vendors segment not read"),
        }
        match (&tc.publisher_tc, &f["publisher_tc"]) {
            (None, Value::Null) => {}
            (Some(p), want) => {
                publisher += 1;
                let k = u64::from(p.num_custom_purposes);
                assert_eq!(
                    mask_ids(u64::from(p.purpose_consents), 24),
                    ids(&want["purpose_consents"])
                );
                assert_eq!(
                    mask_ids(u64::from(p.purpose_legitimate_interests), 24),
                    ids(&want["purpose_legitimate_interests"])
                );
                assert_eq!(k, want["num_custom_purposes"].as_u64().expect("n"));
                assert_eq!(
                    mask_ids(p.custom_purpose_consents, k),
                    ids(&want["custom_purpose_consents"])
                );
                assert_eq!(
                    mask_ids(p.custom_purpose_legitimate_interests, k),
                    ids(&want["custom_purpose_legitimate_interests"])
                );
            }
            (None, _) => panic!("{s}: publisher-TC segment not read"),
        }
    }
    // The fixtures cover both encodings and every optional part.
    assert!(
        ranged > 5 && bitfields > 5,
        "ranged {ranged}, bitfields {bitfields}"
    );
    assert!(restricted > 5 && disclosed > 5 && publisher > 5);
}

#[test]
fn every_truncation_of_a_valid_string_is_refused_or_shorter() {
    let fixtures = iab_fixtures(5);
    for f in &fixtures {
        let s = f["tc"].as_str().expect("tc");
        let core = s.split('.').next().expect("core");
        // IAB's encoder pads a segment to a multiple of 24 bits, so at most
        // three characters are padding: cutting four or more loses a field,
        // and the decoder must say so, never panic.
        for cut in 0..core.len().saturating_sub(4) {
            assert!(decode(&core[..cut]).is_err(), "{s} cut at {cut}");
        }
    }
}

#[test]
fn malformed_strings_are_refused_without_panicking() {
    let valid = iab_fixtures(1)[0]["tc"].as_str().expect("tc").to_owned();
    let core = valid.split('.').next().expect("core").to_owned();
    let cases: Vec<(String, TcfError)> = vec![
        (String::new(), TcfError::Empty),
        ("   ".into(), TcfError::Empty),
        (format!("{core}="), TcfError::NotBase64),
        (
            format!("{}+{}", &core[..4], &core[5..]),
            TcfError::NotBase64,
        ),
        // Version 1 (a TCF v1 "consent string" starts with B).
        (format!("B{}", &core[1..]), TcfError::UnsupportedVersion(1)),
        // Segment type 5 does not exist (first char `o` = 101000).
        (format!("{core}.oAAA"), TcfError::UnknownSegment(5)),
        // The disclosed-vendors segment twice (`I` = 001000).
        (format!("{core}.IAAA.IAAA"), TcfError::DuplicateSegment(1)),
        (format!("{core}.I"), TcfError::Truncated),
    ];
    for (input, want) in cases {
        assert_eq!(decode(&input), Err(want), "{input:?}");
    }
}

#[test]
fn hostile_ranges_are_refused_or_cheap() {
    // A core segment written by hand: all fixed fields zero except the
    // version, then a range-encoded vendor section.
    fn core_with(vendor_bits: &str) -> String {
        let mut bits = String::from("000010"); // version 2
        bits.push_str(&"0".repeat(213 - 6));
        bits.push_str(vendor_bits);
        bits.push_str(&"0".repeat(16 + 1 + 12)); // empty LI section
        bits.push_str(&"0".repeat(12)); // no restrictions
        while bits.len() % 6 != 0 {
            bits.push('0');
        }
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        bits.as_bytes()
            .chunks(6)
            .map(|c| {
                let v = c.iter().fold(0usize, |a, &b| a * 2 + usize::from(b - b'0'));
                char::from(ALPHABET[v])
            })
            .collect()
    }
    let u = |v: u32, w: usize| format!("{v:0w$b}");
    // Language "AA": letters are 0, which is valid.
    // One range 1..=65535 under MaxVendorId 65535: one pair, every id in.
    let all = core_with(&format!(
        "{}1{}1{}{}",
        u(65535, 16),
        u(1, 12),
        u(1, 16),
        u(65535, 16)
    ));
    let tc = decode(&all).expect("a full range decodes");
    assert!(tc.vendor_consent(1) && tc.vendor_consent(65535));
    assert_eq!(tc.vendor_consents.len(), 65535);
    // A range past MaxVendorId.
    let above = core_with(&format!(
        "{}1{}1{}{}",
        u(10, 16),
        u(1, 12),
        u(1, 16),
        u(11, 16)
    ));
    assert_eq!(
        decode(&above),
        Err(TcfError::AboveMaxVendor { id: 11, max: 10 })
    );
    // A range whose end is below its start.
    let backwards = core_with(&format!(
        "{}1{}1{}{}",
        u(10, 16),
        u(1, 12),
        u(5, 16),
        u(2, 16)
    ));
    assert_eq!(
        decode(&backwards),
        Err(TcfError::BadRange { start: 5, end: 2 })
    );
    // 4095 entries announced, none present: refused, either at the end of
    // the bits or at the zero padding base64 adds (read as a range from 0).
    let short = core_with(&format!("{}1{}", u(10, 16), u(4095, 12)));
    assert!(matches!(
        decode(&short),
        Err(TcfError::Truncated | TcfError::BadRange { start: 0, .. })
    ));
}

#[test]
fn vendor_set_lookup_matches_its_ids() {
    let mut r = BitReader::new("AAA").expect("base64");
    let empty = VendorSet::read_ranges(&mut r, None).expect("no entries");
    assert!(empty.is_empty() && !empty.contains(1));
}
