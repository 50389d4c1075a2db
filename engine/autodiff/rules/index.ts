// Importing this module fills the op table (engine/graph/registry.ts) with every shape and
// gradient rule. Anything that builds graphs imports it once, e.g. `import '../autodiff/rules'`.

import './elementwise';
import './activations';
import './linalg';
import './shape';
import './reduce';
import './indexing';
import './norm';
import './loss';
import './misc';
import './control';
import './attention';
