// Prints one TC string made by IAB's own encoder (@iabtechlabtcf/core).
// Usage: node encode.js '{"purposes":[1,3,4],"vendors":[755]}'
"use strict";
const { TCModel, TCString, GVL } = require("@iabtechlabtcf/core");

const want = JSON.parse(process.argv[2] || "{}");
const maxVendor = Math.max(10, ...(want.vendors || []));
const purposes = {};
for (let i = 1; i <= 11; i++) purposes[i] = { id: i, name: "p" + i, description: "", descriptionLegal: "" };
const vendors = {};
for (let id = 1; id <= maxVendor; id++) {
  vendors[id] = {
    id, name: "v" + id, purposes: [1, 3, 4, 8], legIntPurposes: [2, 7], flexiblePurposes: [],
    specialPurposes: [], features: [], specialFeatures: [], policyUrl: "https://example.com",
  };
}
const gvl = new GVL({
  gvlSpecificationVersion: 3, vendorListVersion: 100, tcfPolicyVersion: 4, lastUpdated: "2026-01-01T00:00:00Z",
  purposes, specialPurposes: {}, features: {}, specialFeatures: {}, stacks: {}, dataCategories: {}, vendors,
});
const m = new TCModel(gvl);
m.cmpId = 300;
m.cmpVersion = 2;
m.isServiceSpecific = true;
m.purposeConsents.set(want.purposes || []);
m.vendorConsents.set(want.vendors || []);
process.stdout.write(TCString.encode(m));
