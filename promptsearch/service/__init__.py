"""The service: the job API shared by the CLI and REST (:mod:`.jobs`), the background runner, request
validation, response views, settings and the FastAPI app."""
