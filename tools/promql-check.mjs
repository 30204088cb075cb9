// PromQL expressions read with Prometheus' own grammar (@prometheus-io/lezer-promql, the parser of
// Prometheus' web UI), for tests/k3s/test_monitoring.py: the chart's dashboards and alert rules.
//   node tools/promql-check.mjs EXPRESSIONS.json
// EXPRESSIONS.json holds a JSON array of strings; prints a JSON array, one object per expression:
// {"expr", "error": null or "at N: <text>" (the first place the grammar could not read),
//  "metrics": the metric names its selectors name}.
import { readFileSync } from 'node:fs';
import { parser } from '@prometheus-io/lezer-promql';

const expressions = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = expressions.map((expr) => {
  let error = null;
  const metrics = new Set();
  parser.parse(expr).iterate({
    enter(node) {
      if (node.type.isError && error === null) {
        error = `at ${node.from}: ${JSON.stringify(expr.slice(node.from, node.from + 20))}`;
      }
      // A selector's metric name is its Identifier child.
      if (node.name === 'Identifier' && node.node.parent?.name === 'VectorSelector') {
        metrics.add(expr.slice(node.from, node.to));
      }
    },
  });
  return { expr, error, metrics: [...metrics].sort() };
});
process.stdout.write(JSON.stringify(results) + '\n');
