// Sortable tables (plain JS, no libraries): click a header; reference rows stay with the row above them.
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
  if (box && /[?&]ci=1\b/.test(window.location.search)) {      // ?ci=1: intervals shown from the start
    box.checked = true;
    document.body.classList.add("show-ci");
  }

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
    document.body.setAttribute("data-selftest", JSON.stringify(report));
  }
  if (/[?&]selftest=1\b/.test(window.location.search)) {
    if (document.readyState === "complete") selftest(); else window.addEventListener("load", selftest);
  }
})();
