// Draws each dashboard chart with Chart.js from the JSON the page carries (the same numbers as its table).
(function () {
  'use strict';
  var palette = ['#000091', '#c9191e', '#18753c', '#b34000', '#695240', '#8585f6', '#009081', '#a558a0'];
  var charts = {};
  document.querySelectorAll('canvas[data-chart]').forEach(function (canvas) {
    var data = JSON.parse(document.getElementById(canvas.dataset.chart).textContent);
    var scales = { y: { beginAtZero: true, title: { display: !!data.unit, text: data.unit } } };
    // Series in another unit (rates beside counts) are lines against a second axis, on the right.
    if (data.series.some(function (s) { return s.right; })) {
      scales.y1 = {
        beginAtZero: true, position: 'right', grid: { drawOnChartArea: false },
        title: { display: !!data.unitRight, text: data.unitRight }
      };
    }
    var chart = new Chart(canvas, {
      type: data.type,
      data: {
        labels: data.labels,
        datasets: data.series.map(function (s, i) {
          var dataset = { label: s.name, data: s.values, backgroundColor: palette[i % palette.length], borderColor: palette[i % palette.length] };
          if (s.right) {
            dataset.type = 'line';
            dataset.yAxisID = 'y1';
          }
          return dataset;
        })
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        locale: 'fr-FR',
        plugins: { legend: { position: 'bottom' } },
        scales: scales
      }
    });
    charts[canvas.id] = chart;
  });
  // The browser tests read what was drawn.
  window.parcoursCharts = charts;
})();
