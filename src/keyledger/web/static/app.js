// keyledger web UI: charts (progressive enhancement: every chart has a table beside it).
(function () {
  "use strict";
  var PALETTE = ["#0a58ca", "#1a7f37", "#9a6700", "#b42318", "#8250df", "#0969da", "#bc4c00", "#57606a"];
  function draw(canvas) {
    var src = document.getElementById(canvas.dataset.source);
    if (!src || typeof Chart === "undefined") return;
    var data = JSON.parse(src.textContent);
    data.datasets.forEach(function (d, i) {
      d.data = d.data.map(Number); // display only: the table beside the chart holds the exact amounts
      d.backgroundColor = PALETTE[i % PALETTE.length];
    });
    new Chart(canvas, {
      type: "bar", data: data,
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } },
        plugins: { legend: { position: "bottom" } } }
    });
    canvas.dataset.drawn = "1";
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas.usage-chart").forEach(draw);
  });
})();
