// The leaderboard page (plain JS, no libraries): sortable tables (reference rows stay with the row above them),
// filters, interval toggle, CSV/JSON downloads and the drill-down from a value to its runs.
(function () {
  "use strict";

  function key(row, col) {
    var cell = row.cells[col];
    if (!cell) return { num: false, v: "" };
    if (cell.hasAttribute("data-v")) return { num: true, v: parseFloat(cell.getAttribute("data-v")) };
    return { num: false, v: cell.textContent.trim().toLowerCase() };
  }

  function groups(tbody) {            // a reproduced row and the reference rows after it move together
    var out = [];
    Array.prototype.forEach.call(tbody.rows, function (row) {
      if (row.classList.contains("ref") && out.length) out[out.length - 1].push(row);
      else out.push([row]);
    });
    return out;
  }

  function sortTable(table, col, descending) {
    var tbody = table.tBodies[0];
    var gs = groups(tbody);
    gs.sort(function (a, b) {
      var x = key(a[0], col), y = key(b[0], col);
      if (x.num !== y.num) return x.num ? -1 : 1;          // rows with a number first, dashes last
      if (x.v === y.v) return 0;
      var less = x.v < y.v ? -1 : 1;
      return descending ? -less : less;
    });
    gs.forEach(function (g) { g.forEach(function (row) { tbody.appendChild(row); }); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === col) th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    });
  }

  function onHeader(event) {
    var th = event.currentTarget;
    var table = th.closest("table");
    var numeric = th.classList.contains("num");
    var current = th.getAttribute("aria-sort");
    var descending = current ? current === "ascending" : numeric;   // numbers: best (largest) first
    sortTable(table, th.cellIndex, descending);
  }

  var tables = document.querySelectorAll("table.board");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.addEventListener("click", onHeader); });
  });
  var box = document.getElementById("show-ci");
  if (box) box.addEventListener("change", function () { document.body.classList.toggle("show-ci", box.checked); });
  if (box && /[?&]ci=0\b/.test(window.location.search)) {      // ?ci=0: intervals hidden from the start
    box.checked = false;
    document.body.classList.remove("show-ci");
  }

  // ---------------------------------------------------------------------------------------------- filters
  function text(el) { return el.textContent.trim(); }
  function methodCol(table) {
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) if (text(heads[i]) === "Method") return i;
    return -1;
  }
  function methodOf(row, col) {            // a reference row belongs to the method it is published for
    return text(row.cells[col]).replace(/\s*\(reported\)†?$/, "");
  }
  var fProto = document.getElementById("f-protocol"), fMethod = document.getElementById("f-method");
  var fData = document.getElementById("f-dataset"), fText = document.getElementById("f-text");
  var methods = {};
  Array.prototype.forEach.call(tables, function (table) {
    var col = methodCol(table);
    if (col < 0) return;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      if (!row.classList.contains("ref")) methods[methodOf(row, col)] = true;
    });
  });
  if (fMethod) Object.keys(methods).sort().forEach(function (m) {
    var o = document.createElement("option"); o.value = m; o.textContent = m; fMethod.appendChild(o);
  });
  var datasetTitles = fData ? Array.prototype.map.call(fData.options, function (o) { return o.value; }) : [];

  function applyFilters() {
    var proto = fProto ? fProto.value : "", method = fMethod ? fMethod.value : "";
    var dataset = fData ? fData.value : "", query = fText ? fText.value.trim().toLowerCase() : "";
    var hideNextTable = false;
    Array.prototype.forEach.call(document.querySelectorAll("main > [data-proto]"), function (el) {
      var p = el.getAttribute("data-proto");
      var hidden = proto !== "" && p !== "" && p !== proto;
      if (el.tagName === "H4") {            // a per-dataset sub-table: shown for its dataset only
        hideNextTable = dataset !== "" && datasetTitles.indexOf(text(el)) > 0 && text(el) !== dataset;
        hidden = hidden || hideNextTable;
      } else if (el.classList.contains("scroll")) {
        hidden = hidden || hideNextTable;
        hideNextTable = false;
      }
      el.hidden = hidden;
    });
    Array.prototype.forEach.call(tables, function (table) {
      var heads = table.tHead.rows[0].cells, col = methodCol(table), hideCols = [];
      for (var c = 0; c < heads.length; c++) {
        var h = text(heads[c]);
        if (dataset !== "" && datasetTitles.indexOf(h) > 0 && h !== dataset) hideCols.push(c);
      }
      Array.prototype.forEach.call(table.rows, function (row) {
        for (var c = 0; c < row.cells.length; c++) row.cells[c].classList.toggle("hide-col", hideCols.indexOf(c) >= 0);
      });
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var hide = (method !== "" && col >= 0 && methodOf(row, col) !== method) ||
                   (query !== "" && row.textContent.toLowerCase().indexOf(query) < 0);
        row.hidden = hide;
      });
    });
  }
  [fProto, fMethod, fData].forEach(function (el) { if (el) el.addEventListener("change", applyFilters); });
  if (fText) fText.addEventListener("input", applyFilters);

  // ------------------------------------------------------------------------------------------- downloads
  function cellText(cell) {                  // the value with its interval, without the marks
    var clone = cell.cloneNode(true);
    Array.prototype.forEach.call(clone.querySelectorAll(".tie-mark, .star"), function (x) { x.remove(); });
    return clone.textContent.trim();
  }
  function records(table) {
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells, text);
    return Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; }).map(function (row) {
      var rec = {};
      Array.prototype.forEach.call(row.cells, function (cell, i) {
        var ci = cell.querySelector(".ci");
        rec[heads[i]] = { text: cellText(cell).replace(ci ? ci.textContent.trim() : "\u0000", "").trim(),
                          value: cell.hasAttribute("data-v") ? parseFloat(cell.getAttribute("data-v")) : null,
                          interval: ci ? ci.textContent.trim() : "", tied: !!cell.querySelector(".tie-mark"),
                          reported: row.classList.contains("ref") };
      });
      return rec;
    });
  }
  function toCsv(table) {
    var quote = function (s) { return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells, text);
    var lines = [heads.map(quote).join(",")];
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      if (!row.hidden) lines.push(Array.prototype.map.call(row.cells, function (c) { return quote(cellText(c)); }).join(","));
    });
    return lines.join("\n") + "\n";
  }
  function titleOf(table) {
    var el = table.closest(".scroll").previousElementSibling;
    while (el && !/^H[1-4]$/.test(el.tagName)) el = el.previousElementSibling;
    return el ? text(el) : "table";
  }
  function save(name, type, body) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([body], { type: type }));
    a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
  }
  function slug(s) { return s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 60) || "table"; }
  Array.prototype.forEach.call(document.querySelectorAll(".dl button"), function (btn) {
    btn.addEventListener("click", function () {
      var table = btn.closest(".scroll").querySelector("table"), name = slug(titleOf(table));
      if (btn.getAttribute("data-fmt") === "csv") save(name + ".csv", "text/csv", toCsv(table));
      else save(name + ".json", "application/json", JSON.stringify(records(table), null, 1));
    });
  });
  function allTables() {
    return Array.prototype.map.call(tables, function (t) { return { title: titleOf(t), rows: records(t) }; });
  }
  var dlAll = document.getElementById("dl-all");
  if (dlAll) dlAll.addEventListener("click", function () {
    save("leaderboard-tables.json", "application/json", JSON.stringify(allTables(), null, 1));
  });

  // ------------------------------------------------------------------------------------------ drill-down
  var drillData = {};
  try { drillData = JSON.parse(document.getElementById("drill-data").textContent || "{}"); } catch (e) { drillData = {}; }
  var panel = document.getElementById("drill"), panelBody = document.getElementById("drill-body");
  function showDrill(cell) {
    var runs = drillData[cell.getAttribute("data-drill")] || [];
    var table = cell.closest("table"), row = cell.parentNode;
    var head = text(table.tHead.rows[0].cells[cell.cellIndex]), who = text(row.cells[methodCol(table) >= 0 ? methodCol(table) : 0]);
    var cols = ["dataset", "eval", "seed", "acc", "n", "cell", "result", "log"];
    var html = "<p><strong>" + escapeHtml(who + " · " + head) + "</strong>: " + runs.length +
      " run(s); result.json holds each run's full config</p><table><tr>" +
      cols.map(function (c) { return "<th>" + c + "</th>"; }).join("") + "</tr>";
    runs.forEach(function (r) {
      html += "<tr>" + cols.map(function (c) { return "<td>" + escapeHtml(r[c] === null ? "—" : String(r[c])) + "</td>"; }).join("") + "</tr>";
    });
    panelBody.innerHTML = html + "</table>";
    panel.hidden = false;
  }
  function escapeHtml(s) {
    return s.replace(/[&<>"]/g, function (ch) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch]; });
  }
  Array.prototype.forEach.call(document.querySelectorAll("td[data-drill]"), function (cell) {
    cell.addEventListener("click", function () { showDrill(cell); });
  });
  var closer = document.getElementById("drill-close");
  if (closer) closer.addEventListener("click", function () { panel.hidden = true; });

  // ?selftest=1: sort one table by a number column and record what the page shows, for the browser test.
  function selftest() {
    var report = { tables: [], sorted: null, images: [] };
    Array.prototype.forEach.call(tables, function (table) {
      report.tables.push(table.querySelectorAll("tbody tr:not(.ref)").length);
    });
    function order(table) {
      return Array.prototype.map.call(table.querySelectorAll("tbody tr:not(.ref)"), function (r) {
        return Array.prototype.map.call(r.cells, function (c) { return c.textContent.trim(); }).join("|");
      });
    }
    function column(table, c) {
      return Array.prototype.map.call(table.querySelectorAll("tbody tr:not(.ref)"), function (r) {
        var k = key(r, c); return k.num ? k.v : null;
      });
    }
    // the first number column whose sort changes the row order
    for (var t = 0; t < tables.length && !report.sorted; t++) {
      var table = tables[t], heads = table.tHead.rows[0].cells;
      for (var c = 0; c < heads.length && !report.sorted; c++) {
        if (!heads[c].classList.contains("num")) continue;
        var before = order(table);
        heads[c].click();
        var after = order(table);
        if (after.join("\n") === before.join("\n")) continue;    // already in this order: try the next column
        var values = column(table, c), sortState = heads[c].getAttribute("aria-sort");
        heads[c].click();
        report.sorted = { table: t, column: c, header: heads[c].textContent.trim(), before: before, after: after,
                          values: values, sort: sortState, reversed: column(table, c),
                          reversedSort: heads[c].getAttribute("aria-sort") };
      }
    }
    Array.prototype.forEach.call(document.images, function (img) {
      report.images.push({ ok: img.complete && img.naturalWidth > 0, width: img.naturalWidth, alt: img.alt });
    });
    var visible = function (t) { return t.querySelectorAll("tbody tr:not([hidden])").length; };
    report.headTips = Array.prototype.map.call(document.querySelectorAll("table.board th"), function (th) {
      return th.getAttribute("title") || "";
    });
    report.ciShown = getComputedStyle(document.querySelector(".ci") || document.body).display !== "none";
    report.methods = fMethod ? Array.prototype.slice.call(fMethod.options, 1).map(function (o) { return o.value; }) : [];
    if (report.methods.length) {                       // the method filter keeps that method's rows only
      fMethod.value = report.methods[0]; applyFilters();
      report.methodFilter = { method: report.methods[0], rows: Array.prototype.map.call(tables, visible) };
      fMethod.value = ""; applyFilters();
    }
    fText.value = "zzz-nothing"; applyFilters();
    report.textFilter = Array.prototype.map.call(tables, visible);
    fText.value = ""; applyFilters();
    if (fProto && fProto.options.length > 1) {
      fProto.value = fProto.options[1].value; applyFilters();
      report.protoFilter = { proto: fProto.value, hidden: document.querySelectorAll("main > [data-proto][hidden]").length,
        shown: Array.prototype.map.call(document.querySelectorAll("main > h2:not([hidden])"), text) };
      fProto.value = ""; applyFilters();
    }
    if (fData && fData.options.length > 1) {
      fData.value = fData.options[1].value; applyFilters();
      report.datasetFilter = { dataset: fData.value, hiddenHeads: Array.prototype.map.call(
        document.querySelectorAll("th.hide-col"), text) };
      fData.value = ""; applyFilters();
    }
    var cell = document.querySelector("td[data-drill]");
    if (cell) { cell.click(); report.drill = { hidden: panel.hidden, text: panelBody.textContent }; }
    report.csv = tables.length ? toCsv(tables[0]) : "";
    report.json = allTables().length;
    document.body.setAttribute("data-selftest", JSON.stringify(report));
  }
  if (/[?&]selftest=1\b/.test(window.location.search)) {
    if (document.readyState === "complete") selftest(); else window.addEventListener("load", selftest);
  }
})();
