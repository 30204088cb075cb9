// Validates AsyncAPI documents with the reference parser (@asyncapi/parser): schema and spectral
// rules. Exits 1 on any error-severity diagnostic, printing every diagnostic found.
// Usage: node tools/validate-asyncapi.mjs docs/asyncapi.yaml
import { readFileSync } from "node:fs";
import { Parser, fromFile } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "info", "hint"];
const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node tools/validate-asyncapi.mjs FILE...");
  process.exit(2);
}
const parser = new Parser();
let failed = false;
for (const path of paths) {
  readFileSync(path); // a missing file is an error of its own, not a parser diagnostic
  const { document, diagnostics } = await fromFile(parser, path).parse();
  for (const d of diagnostics) {
    const where = d.path && d.path.length ? d.path.join(".") : "(document)";
    console.log(`${path}: ${SEVERITY[d.severity] ?? d.severity}: ${d.code}: ${d.message} at ${where}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (document === undefined || errors.length > 0) {
    failed = true;
    console.log(`${path}: INVALID (${errors.length} errors)`);
  } else {
    console.log(`${path}: valid AsyncAPI ${document.version()} (${diagnostics.length} non-error diagnostics)`);
  }
}
process.exit(failed ? 1 : 0);
