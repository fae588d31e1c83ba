"""The workbench pages: one module per page, each with one ``render()`` function, routed by ``app.web.router``."""
