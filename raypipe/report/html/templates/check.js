// The behaviour of a monitor check's report and of a reference's history: the charts (vega-embed) and the
// sortable tables (DataTables).
(() => {
  "use strict";
  const specs = JSON.parse(document.getElementById("data-specs").textContent);
  const jobs = [];
  for (const [name, spec] of Object.entries(specs)) {
    const target = document.getElementById("chart-" + name);
    if (spec && target) jobs.push(vegaEmbed(target, spec, { renderer: "svg", actions: false }));
  }
  Promise.all(jobs).then(() => { document.body.dataset.chartsReady = String(jobs.length); });
  const setUpTable = () => {
    window.raypipeDataTables.jQuery("table.sortable").DataTable({ paging: false, order: [] });
    document.body.dataset.tableReady = "1";
  };
  if (window.raypipeDataTables) setUpTable();
  else window.addEventListener("raypipe-datatables-ready", setUpTable, { once: true });
})();
