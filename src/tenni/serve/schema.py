"""The shapes of the API's answers (for the OpenAPI schema and docs page) and of the predict request body.

The request body is validated by hand (``app.parse_json_inputs``, ``inputs.py``) so each error names its field in
tenni's words; its schema is declared here, for JSON and multipart, with the limits of the running server.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from .limits import Limits


class ErrorDetail(BaseModel):
    code: int = Field(description="The HTTP status code.")
    field: str | None = Field(None, description="What the error is about: 'inputs[3]', 'body', 'Authorization'.")
    message: str = Field(description="One line: what is wrong and how to fix it.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str = "ok"


class Ready(BaseModel):
    ready: bool
    models: dict[str, bool] = Field(description="Per model: loaded.")


class ModelSummary(BaseModel):
    name: str = Field(description="The model folder's name: the {name} in the URLs.")
    runtime: str
    loaded: bool
    modality: str = Field(description="text, image or audio: what the model takes.")
    task: str = Field(description="classify, or anomaly (normal/defect with a score).")
    labels: list[str]
    backbone: str | None = None
    strategy: str | None = None
    metrics: dict[str, float | int | str] = Field(default_factory=dict,
                                                 description="How it was measured and what it scored.")
    tenni_version: str | None = None
    created: str | None = None


class ModelList(BaseModel):
    models: list[ModelSummary]


class Prediction(BaseModel):
    label: str = Field(description="The most probable label (anomaly models: 'normal' or 'defect').")
    probabilities: dict[str, float] | None = Field(
        None, description="One probability per label, summing to 1 (classifiers).")
    score: float | None = Field(None, description="Anomaly models: higher is more unusual.")
    threshold: float | None = Field(None, description="Anomaly models: scores above it are defects.")


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction] = Field(description="One per input, in input order.")


def error_responses(*codes: int) -> dict:
    what = {401: "Missing or wrong API key", 404: "No such model", 408: "The body arrived too slowly",
            413: "The body is too large", 415: "Unsupported content type",
            422: "An input or field cannot be used (the error names it)", 503: "The models are still loading"}
    return {code: {"model": ErrorResponse, "description": what.get(code, "Error")} for code in codes}


def predict_request_body(limits: Limits) -> dict:
    media_item = {
        "type": "object", "title": "MediaItem", "required": ["b64"], "additionalProperties": False,
        "properties": {
            "b64": {"type": "string", "description": "The file's bytes, base64 (a data: URL is accepted)."},
            "filename": {"type": "string", "description": "Optional: its name (only its suffix is used, when the "
                                                          "bytes do not show the format)."},
        },
    }
    text = {"type": "string", "maxLength": limits.max_text_chars, "title": "Text"}
    return {
        "required": True,
        "description": (f"Text models: JSON `{{\"inputs\": [\"a text\", ...]}}`. Image and audio models: JSON "
                        f"`{{\"inputs\": [{{\"b64\": \"...\"}}]}}` or multipart files in the field `files`. "
                        f"At most {limits.max_items} inputs, {limits.max_text_chars} characters per text, "
                        f"{limits.max_image_pixels} pixels per image, {limits.max_audio_seconds:g} s per clip, "
                        f"{limits.max_body_bytes} bytes per body."),
        "content": {
            "application/json": {"schema": {
                "type": "object", "title": "PredictRequest", "required": ["inputs"], "additionalProperties": False,
                "properties": {"inputs": {"type": "array", "minItems": 1, "maxItems": limits.max_items,
                                          "items": {"anyOf": [text, media_item]}}},
            }, "example": {"inputs": ["Free entry in a weekly competition!", "See you at lunch?"]}},
            "multipart/form-data": {"schema": {
                "type": "object", "title": "PredictFiles", "required": ["files"],
                "properties": {"files": {"type": "array", "minItems": 1, "maxItems": limits.max_items,
                                         "items": {"type": "string", "format": "binary"}}},
            }},
        },
    }
