// Makes TC strings with IAB's own encoder (@iabtechlabtcf/core) and prints,
// as JSON, each string with the fields IAB's decoder reads back from it.
// The worker's decoder test (edge-worker/src/consent/tcf/tests.rs) checks
// that it reads exactly the same. Deterministic: a seeded generator.
//
// Usage: node make.js [count]
"use strict";
const { TCModel, TCString, GVL, PurposeRestriction, Segment } = require("@iabtechlabtcf/core");

let seed = 0x5eed1234;
function rand() {
  // xorshift32: the same strings on every run.
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 0x100000000;
}
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

// A vendor list of our own making, so the pre-encoder keeps every vendor:
// each declares consent purposes, legitimate-interest purposes and
// flexible purposes.
function vendorList(maxVendor) {
  const purposes = {};
  for (let i = 1; i <= 11; i++) purposes[i] = { id: i, name: "p" + i, description: "", descriptionLegal: "" };
  const specialFeatures = { 1: { id: 1, name: "sf1" }, 2: { id: 2, name: "sf2" } };
  const vendors = {};
  for (let id = 1; id <= maxVendor; id++) {
    // A few holes, so vendor ids are not contiguous.
    if (id % 97 === 0) continue;
    vendors[id] = {
      id, name: "v" + id, purposes: [1, 3, 4], legIntPurposes: [2, 7, 8, 9, 10],
      flexiblePurposes: [2, 7], specialPurposes: [1], features: [], specialFeatures: [1],
      policyUrl: "https://example.com", cookieMaxAgeSeconds: 0, usesCookies: true, usesNonCookieAccess: false,
    };
  }
  return {
    gvlSpecificationVersion: 3, vendorListVersion: int(1, 4000), tcfPolicyVersion: 4,
    lastUpdated: "2026-01-01T00:00:00Z", purposes, specialPurposes: { 1: { id: 1, name: "sp1" } },
    features: {}, specialFeatures, stacks: {}, dataCategories: {}, vendors,
  };
}

function randomSet(maxVendor, style) {
  const ids = [];
  if (style === "runs") {
    // Long runs: the encoder chooses the range encoding.
    let id = int(1, 20);
    while (id <= maxVendor) {
      const len = int(20, 300);
      for (let i = id; i < Math.min(id + len, maxVendor + 1); i++) ids.push(i);
      id += len + int(5, 400);
    }
  } else if (style === "sparse") {
    for (let i = 0; i < int(1, 6); i++) ids.push(int(1, maxVendor));
  } else {
    for (let id = 1; id <= maxVendor; id++) if (rand() < 0.4) ids.push(id);
  }
  return ids;
}

const styles = ["runs", "sparse", "dense"];
const count = Number(process.argv[2] || 40);
const out = [];
for (let n = 0; n < count; n++) {
  const maxVendor = [12, 150, 900, 1200, 3000][n % 5];
  const gvl = new GVL(vendorList(maxVendor));
  const m = new TCModel(gvl);
  m.cmpId = int(2, 4095);
  m.cmpVersion = int(1, 4095);
  m.consentScreen = int(0, 63);
  m.publisherCountryCode = ["DE", "FR", "GB", "IT", "ES", "AA"][n % 6];
  m.isServiceSpecific = n % 2 === 0;
  m.useNonStandardTexts = n % 3 === 0;
  m.purposeOneTreatment = n % 4 === 0;
  for (let i = 1; i <= 12; i++) if (rand() < 0.5) m.specialFeatureOptins.set(i);
  for (let i = 1; i <= 24; i++) if (rand() < 0.5) m.purposeConsents.set(i);
  for (let i = 1; i <= 24; i++) if (rand() < 0.5) m.purposeLegitimateInterests.set(i);
  const existing = (ids) => ids.filter((id) => gvl.vendors[id]);
  m.vendorConsents.set(existing(randomSet(maxVendor, styles[n % 3])));
  m.vendorLegitimateInterests.set(existing(randomSet(maxVendor, styles[(n + 1) % 3])));
  const restrictions = n % 5 === 4 ? 0 : int(0, 3);
  for (let r = 0; r < restrictions; r++) {
    const pr = new PurposeRestriction([2, 7][r % 2], int(0, 2));
    for (const id of existing(randomSet(maxVendor, "sparse"))) m.publisherRestrictions.add(id, pr);
  }
  const segments = [Segment.CORE];
  if (n % 3 !== 2) {
    m.vendorsDisclosed.set(existing(randomSet(maxVendor, styles[(n + 2) % 3])));
    segments.push(Segment.VENDORS_DISCLOSED);
  }
  if (n % 2 === 1) {
    for (let i = 1; i <= 24; i++) if (rand() < 0.5) m.publisherConsents.set(i);
    for (let i = 1; i <= 24; i++) if (rand() < 0.5) m.publisherLegitimateInterests.set(i);
    m.numCustomPurposes = int(0, 10);
    for (let i = 1; i <= m.numCustomPurposes; i++) {
      if (rand() < 0.5) m.publisherCustomConsents.set(i);
      if (rand() < 0.5) m.publisherCustomLegitimateInterests.set(i);
    }
    segments.push(Segment.PUBLISHER_TC);
  }
  const created = new Date(Date.UTC(2020 + (n % 7), n % 12, 1 + (n % 28), n % 24, n % 60, n % 60, (n * 100) % 1000));
  m.created = created;
  m.lastUpdated = new Date(created.getTime() + n * 86400000);

  const tc = TCString.encode(m, { segments });
  // What the string says, read back by IAB's own decoder.
  const d = TCString.decode(tc);
  const ids = (v) => { const a = []; v.forEach((on, id) => { if (on) a.push(id); }); return a; };
  const restr = [];
  d.publisherRestrictions.getRestrictions().forEach((pr) => {
    restr.push({ purpose: pr.purposeId, type: pr.restrictionType, vendors: d.publisherRestrictions.getVendors(pr) });
  });
  restr.sort((a, b) => a.purpose - b.purpose || a.type - b.type);
  // Whether each vendor section used the range encoding: bit 16 after MaxVendorId.
  out.push({
    tc,
    version: d.version,
    created_ds: Math.round(d.created.getTime() / 100),
    last_updated_ds: Math.round(d.lastUpdated.getTime() / 100),
    cmp_id: d.cmpId,
    cmp_version: d.cmpVersion,
    consent_screen: d.consentScreen,
    consent_language: d.consentLanguage,
    vendor_list_version: d.vendorListVersion,
    policy_version: d.policyVersion,
    is_service_specific: d.isServiceSpecific,
    use_non_standard_texts: d.useNonStandardTexts,
    special_feature_opt_ins: ids(d.specialFeatureOptins),
    purpose_consents: ids(d.purposeConsents),
    purpose_legitimate_interests: ids(d.purposeLegitimateInterests),
    purpose_one_treatment: d.purposeOneTreatment,
    publisher_country_code: d.publisherCountryCode,
    vendor_consents: ids(d.vendorConsents),
    vendor_consents_max: d.vendorConsents.maxId,
    vendor_legitimate_interests: ids(d.vendorLegitimateInterests),
    publisher_restrictions: restr,
    disclosed_vendors: segments.includes(Segment.VENDORS_DISCLOSED) ? ids(d.vendorsDisclosed) : null,
    publisher_tc: segments.includes(Segment.PUBLISHER_TC)
      ? {
          purpose_consents: ids(d.publisherConsents),
          purpose_legitimate_interests: ids(d.publisherLegitimateInterests),
          num_custom_purposes: d.numCustomPurposes,
          custom_purpose_consents: ids(d.publisherCustomConsents),
          custom_purpose_legitimate_interests: ids(d.publisherCustomLegitimateInterests),
        }
      : null,
    // What was set (before IAB's pre-encoder), to show the sets survived.
    set_vendor_consents: ids(m.vendorConsents).length,
  });
}
process.stdout.write(JSON.stringify(out));
