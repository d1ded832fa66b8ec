"""The HTTP surface: falcon resources, request parsing, schemas, OpenAPI and error rendering."""
