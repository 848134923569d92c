// Validates Prometheus Operator objects (ServiceMonitor, PrometheusRule) against the schemas
// of the prometheus-operator CRDs, as packaged in @kubernetes-models/prometheus-operator
// (installed by .ci/install-helm). Usage:
//   node validate_monitoring.mjs MODELS_DIR < objects.json
// where MODELS_DIR is node_modules/@kubernetes-models/prometheus-operator and the input is
// a JSON array of objects. Prints one line per problem; exits 1 when there is one.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modelsDir = process.argv[2];
const models = await import(pathToFileURL(join(modelsDir, "monitoring.coreos.com/v1/index.js")));
const objects = JSON.parse(readFileSync(0, "utf8"));
let problems = 0;
for (const obj of objects) {
  const where = `${obj.kind}/${obj.metadata?.name}`;
  const Model = obj.apiVersion === "monitoring.coreos.com/v1" ? models[obj.kind] : undefined;
  if (!Model) {
    console.log(`${where}: no schema for ${obj.apiVersion} ${obj.kind}`);
    problems++;
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    console.log(`${where}: ${e.message}`);
    problems++;
  }
}
console.log(`${objects.length} checked, ${problems} invalid`);
process.exit(problems ? 1 : 0);
