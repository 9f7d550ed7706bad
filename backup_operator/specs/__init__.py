"""One typed spec per resource: its fields, types, defaults, bounds and descriptions,
written once. The API's schemas derive from it, the CRDs' OpenAPI schemas are generated
from it (`make crd-schemas`), the catalog checks it and the operator parses resources
with it."""
