// Renders templates with handlebars.js, the reference implementation, for
// agent/tests/templates.rs to compare byte for byte with the agent.
// stdin: [{"name", "template", "context"}]; stdout: [{"name", "output"} or
// {"name", "error"}]. The agent's helpers are mirrored here so that golden
// templates using them can be cross-checked too.
"use strict";
const Handlebars = require("handlebars");

const hb = Handlebars.create();
const missing = (v) => v === undefined;
hb.registerHelper("default", (v, fb) =>
  missing(v) || v === null || v === "" ? fb : v);
// JSON.stringify leaves DEL and the C1 controls raw; the agent escapes them.
hb.registerHelper("json", (v) => JSON.stringify(v).replace(/[\u007f-\u009f]/g,
  (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0")));
hb.registerHelper("shell", (v) => "'" + String(v).replace(/'/g, "'\"'\"'") + "'");
hb.registerHelper("dquote", (v) => '"' + String(v).replace(/[\\"]/g, "\\$&") + '"');
hb.registerHelper("base64", (v) => Buffer.from(String(v), "utf8").toString("base64"));
hb.registerHelper("base64_decode", (v) => Buffer.from(String(v).trim(), "base64").toString("utf8"));

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map(({ name, template, context }) => {
    try {
      const t = hb.compile(template, { noEscape: true });
      return { name, output: t(context) };
    } catch (e) {
      return { name, error: String(e.message) };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
