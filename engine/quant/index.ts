// Post-training quantization: config schema, quantizeGraph (int8 dynamic, int8 static QDQ, int4
// MatMulNBits) and the perplexity publish gate.

import './rules';

export { QuantConfigSchema, DEFAULT_EXCLUDE, type QuantConfig, type QuantConfigInput, type QuantMethod } from './config';
export { quantizeGraph, type QuantReport, type QuantizedNode, type QuantizeOptions } from './quantize';
export { validateQuantized, QuantRejectedError, type ValidationResult, type ValidateOptions } from './validate';
export { calibrateRanges, type Range } from './calibrate';
export { findLinearSites, type LinearSite } from './rewrite';
