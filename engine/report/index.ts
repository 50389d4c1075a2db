// Run reports: loss-curve SVG and the self-contained HTML page (pure rendering, no I/O).

export { lineChartSvg, lossCurvesSvg, niceTicks, escapeXml, fmt, type CurvePoint, type CurveSeries, type ChartOptions, type LossHistory } from './svg';
export { coverageText, renderReportHtml, flatten, trainedShare, type RunReport, type ReportLora, type ReportVariant, type ReportSample, type VariantSummary } from './html';
export { renderReportText } from './text';
export { isPretrainingTask, renderFamilyReportHtml, renderFamilyReportText, type FamilyReport, type FamilyReportLora, type FamilyReportTask, type FamilyReportVariant } from './family';
