"""The token endpoint (``lk-metadata serve``): config, app and OpenAPI document."""
