"""Request and response schemas: the one definition that validates requests and generates /openapi.json.

Query-string values arrive as text and are parsed leniently ("0.5", "true"); JSON bodies are validated
strictly (a JSON `false` is not a number).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Confidence = Annotated[float | Literal["best", "default"], Field(
    description="Minimum confidence, in [0, 1]. On the legacy route values >= 1 are percentages (hosted-API "
                "style). 'best'/'default' use the server default.")]


class ImageReference(BaseModel):
    """An image named inside a JSON body."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="How `value` is to be read: 'base64', 'url' or 'numpy' (base64 of an .npy "
                                  "file or of a pickled ndarray; decoded without running pickle, only when "
                                  "enabled).", examples=["base64"])
    value: str = Field(description="Base64 text (an optional data: prefix is stripped), an http(s) URL, or "
                                   "base64 numpy payload.")


class PreprocessingSwitches(BaseModel):
    disable_preproc_auto_orient: bool = Field(False, description="Ignore EXIF orientation.")
    disable_preproc_contrast: bool = Field(False, description="Skip the model's contrast step.")
    disable_preproc_grayscale: bool = Field(False, description="Skip the model's grayscale step.")
    disable_preproc_static_crop: bool = Field(False, description="Skip the model's static crop.")


class DetectionOptions(PreprocessingSwitches):
    confidence: Confidence = 0.4
    max_detections: int = Field(300, ge=1, le=10000, description="Most predictions returned per image.")
    class_agnostic_nms: bool = Field(False, description="Run NMS across classes instead of per class.")
    class_filter: list[str] | None = Field(None, description="Only return these class names.")


class LegacyQueryParameters(DetectionOptions):
    """Query-string parameters of `POST /{project_id}/{model_version}` (Roboflow hosted-API style)."""

    model_config = ConfigDict(extra="ignore")
    api_key: str | None = Field(None, description="Registry API key; only needed to download a model once.")
    overlap: float | None = Field(None, ge=0, description="NMS IoU threshold (values >= 1 are percentages).")
    iou_threshold: float | None = Field(None, ge=0, description="Alias of `overlap`.")
    image: str | None = Field(None, description="URL of the image; the body is then ignored.")
    image_type: Literal["base64", "numpy"] = Field(
        "base64", description="How a non-image body is read: base64 text (default) or a numpy payload.")
    format: Literal["json"] = Field("json", description="Response format; only 'json' is served.")


class LegacyJsonBody(DetectionOptions):
    """JSON body of `POST /{project_id}/{model_version}`; a list of images gives a list of responses."""

    model_config = ConfigDict(extra="ignore")
    image: ImageReference | list[ImageReference]
    api_key: str | None = Field(None, description="Registry API key; only needed to download a model once.")
    iou_threshold: float | None = Field(None, ge=0, description="NMS IoU threshold (default 0.3).")
    overlap: float | None = Field(None, ge=0, description="Alias of `iou_threshold` (hosted-API name).")


class ImageDimensions(BaseModel):
    width: int
    height: int


class ObjectDetectionPrediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    x: float = Field(description="Box centre x in original-image pixels.")
    y: float = Field(description="Box centre y in original-image pixels.")
    width: float
    height: float
    confidence: float
    class_name: str = Field(alias="class")
    class_id: int
    detection_id: str


class ObjectDetectionResponse(BaseModel):
    inference_id: str
    time: float = Field(description="Seconds spent on this request inside the server.")
    image: ImageDimensions
    predictions: list[ObjectDetectionPrediction]


class ErrorResponse(BaseModel):
    message: str


SCHEMAS: tuple[type[BaseModel], ...] = (ImageReference, LegacyJsonBody, ObjectDetectionPrediction,
                                        ObjectDetectionResponse, ErrorResponse, ImageDimensions)


def describe_validation_error(error: Any) -> str:
    """A one-line message naming each offending field, for pydantic ValidationErrors."""
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(piece) for piece in item.get("loc", ())) or "body"
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
