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
    type: str = Field(max_length=64, description="How `value` is to be read: 'base64', 'url' or 'numpy' (base64 of an .npy "
                                  "file or of a pickled ndarray; decoded without running pickle, only when "
                                  "enabled).", examples=["base64"])
    value: str = Field(description="Base64 text (an optional data: prefix is stripped), an http(s) URL, or "
                                   "base64 numpy payload.")


class PreprocessingSwitches(BaseModel):
    disable_preproc_auto_orient: bool = Field(False, description="Ignore EXIF orientation.")
    disable_preproc_contrast: bool = Field(False, description="Skip the model's contrast step.")
    disable_preproc_grayscale: bool = Field(False, description="Skip the model's grayscale step.")
    disable_preproc_static_crop: bool = Field(False, description="Skip the model's static crop.")


MaskDecodeMode = Literal["accurate", "fast", "tradeoff"]
MaskFormat = Literal["polygon", "rle"]


class InferenceOptions(PreprocessingSwitches):
    """Options shared by the legacy route's query string and JSON body."""

    confidence: Confidence = 0.4
    max_detections: int = Field(300, ge=1, le=10000, description="Most predictions returned per image.")
    class_agnostic_nms: bool = Field(False, description="Run NMS across classes instead of per class.")
    class_filter: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=1000, description="Only return these class names.")
    mask_decode_mode: MaskDecodeMode = Field(
        "accurate", description="Segmentation mask resolution: network input (accurate), prototypes (fast), "
                                "or in between (tradeoff).")
    tradeoff_factor: float = Field(0.0, ge=0, le=1, description="With mask_decode_mode=tradeoff: 0 fast … 1 "
                                                                "accurate.")
    response_mask_format: MaskFormat = Field("polygon", description="Segmentation masks as `points` (largest "
                                                                    "contour) or COCO `rle`.")
    format: Literal["json", "image", "image_and_json"] = Field(
        "json", description="'image' answers a JPEG with predictions drawn; 'image_and_json' adds it base64 "
                            "as `visualization`.")
    labels: bool = Field(False, description="Draw class names and confidences in the visualisation.")
    stroke: int = Field(1, ge=1, le=50, description="Line width of the visualisation, in pixels.")
    keypoint_confidence: float = Field(0.0, ge=0, le=1, description="Keypoint models: leave out keypoints below "
                                                                    "this confidence.")


class LegacyQueryParameters(InferenceOptions):
    """Query-string parameters of `POST /{project_id}/{model_version}` (Roboflow hosted-API style)."""

    model_config = ConfigDict(extra="ignore")
    api_key: str | None = Field(None, max_length=512,
                                description="Registry API key; only needed to download a model once.")
    overlap: float | None = Field(None, ge=0, description="NMS IoU threshold (values >= 1 are percentages).")
    iou_threshold: float | None = Field(None, ge=0, description="Alias of `overlap`.")
    image: str | None = Field(None, description="URL of the image; the body is then ignored.")
    image_type: Literal["base64", "numpy"] = Field(
        "base64", description="How a non-image body is read: base64 text (default) or a numpy payload.")


class LegacyJsonBody(InferenceOptions):
    """JSON body of `POST /{project_id}/{model_version}`; a list of images gives a list of responses."""

    model_config = ConfigDict(extra="ignore")
    image: ImageReference | list[ImageReference]
    api_key: str | None = Field(None, max_length=512,
                                description="Registry API key; only needed to download a model once.")
    iou_threshold: float | None = Field(None, ge=0, description="NMS IoU threshold (default 0.3).")
    overlap: float | None = Field(None, ge=0, description="Alias of `iou_threshold` (hosted-API name).")


class InferRequestBase(PreprocessingSwitches):
    """Fields common to Roboflow's `/infer/{task}` JSON bodies."""

    model_config = ConfigDict(extra="ignore")
    model_id: str = Field(max_length=256, description="`project/version`, e.g. `shapes/1`.", examples=["shapes/1"])
    image: ImageReference | list[ImageReference]
    api_key: str | None = Field(None, max_length=512)
    id: str | None = Field(None, description="Returned as `inference_id`.")
    confidence: Confidence = 0.4
    visualize_predictions: bool = Field(False, description="Add a base64 JPEG `visualization`.")
    visualization_labels: bool = False
    visualization_stroke_width: int = Field(1, ge=1, le=50)


class ObjectDetectionInferenceRequest(InferRequestBase):
    iou_threshold: float = Field(0.3, ge=0, le=1)
    class_agnostic_nms: bool = False
    class_filter: list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=1000)
    max_detections: int = Field(300, ge=1, le=10000)
    max_candidates: int = Field(3000, ge=1, description="Accepted for compatibility.")


class InstanceSegmentationInferenceRequest(ObjectDetectionInferenceRequest):
    mask_decode_mode: MaskDecodeMode = "accurate"
    tradeoff_factor: float = Field(0.0, ge=0, le=1)
    response_mask_format: MaskFormat = "polygon"


class ClassificationInferenceRequest(InferRequestBase):
    pass


class KeypointsDetectionInferenceRequest(ObjectDetectionInferenceRequest):
    keypoint_confidence: float = Field(0.0, ge=0, le=1, description="Leave out keypoints below this confidence.")


class SemanticSegmentationInferenceRequest(InferRequestBase):
    confidence: Confidence = Field(0.4, description="Pixels whose class confidence is below it are answered as "
                                                    "the `background` class (when the model has one).")


class ModelIdRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_id: str = Field(max_length=256, examples=["shapes/1"])
    api_key: str | None = Field(None, max_length=512)


class ModelDescription(BaseModel):
    model_id: str
    task_type: str
    family: str | None = Field(None, description="The model family decoding it (yolov8, yolo26, rfdetr, ...).")
    batch_size: int | str
    input_height: int
    input_width: int


class FailedModel(BaseModel):
    model_id: str
    status: int = Field(description="The HTTP status its requests get until the next try.")
    message: str
    reason: str = Field(description="The step that failed: files, registry, metadata, engine, warmup or layout.")
    attempts: int
    next_try: str | None = Field(description="When a request may load it again (UTC); sooner if its files "
                                             "change, or on POST /model/add.")


class ModelsDescriptions(BaseModel):
    models: list[ModelDescription]
    failed: list[FailedModel] = Field(default_factory=list, description="Models whose last load failed (absent "
                                      "when none did).")


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
    visualization: str | None = Field(None, description="Base64 JPEG, when asked for.")


class Point(BaseModel):
    x: float
    y: float


class CocoRle(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed run-length string (column-major)")


class InstanceSegmentationPrediction(ObjectDetectionPrediction):
    points: list[Point] | None = Field(None, description="Largest external contour: (column, row) of the mask's "
                                      "outermost original-image pixels; cv2.fillPoly of the rounded points "
                                      "gives the mask back (to within half a pixel).")
    rle: CocoRle | None = None
    mask_format: MaskFormat


class InstanceSegmentationResponse(BaseModel):
    inference_id: str
    time: float
    image: ImageDimensions
    predictions: list[InstanceSegmentationPrediction]
    visualization: str | None = None


class Keypoint(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    x: float = Field(description="Original-image pixels.")
    y: float
    confidence: float
    class_id: int = Field(description="The keypoint's index in its object class's keypoint list.")
    class_name: str = Field(alias="class", description="The keypoint's name (keypoints_metadata.json).")


class KeypointsPrediction(ObjectDetectionPrediction):
    keypoints: list[Keypoint]


class KeypointsDetectionResponse(BaseModel):
    inference_id: str
    time: float
    image: ImageDimensions
    predictions: list[KeypointsPrediction]
    visualization: str | None = None


class SemanticSegmentationPrediction(BaseModel):
    segmentation_mask: str = Field(description="Base64 8-bit PNG at the original size: each pixel its class id.")
    confidence_mask: str = Field(description="Base64 8-bit PNG: each pixel its class confidence x 255.")
    class_map: dict[str, str] = Field(description="Pixel value (class id, as text) to class name.")
    present_class_ids: list[int] = Field(description="The class ids present in the mask, sorted.")


class SemanticSegmentationResponse(BaseModel):
    inference_id: str
    time: float
    image: ImageDimensions
    predictions: SemanticSegmentationPrediction
    visualization: str | None = None


class ClassificationPrediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_name: str = Field(alias="class")
    class_id: int
    confidence: float


class ClassificationResponse(BaseModel):
    inference_id: str
    time: float
    image: ImageDimensions
    predictions: list[ClassificationPrediction] = Field(description="Classes above the threshold, best first.")
    top: str
    confidence: float
    visualization: str | None = None


class MultiLabelClassPrediction(BaseModel):
    confidence: float
    class_id: int


class MultiLabelClassificationResponse(BaseModel):
    inference_id: str
    time: float
    image: ImageDimensions
    predictions: dict[str, MultiLabelClassPrediction]
    predicted_classes: list[str]
    visualization: str | None = None


class ErrorResponse(BaseModel):
    message: str


SCHEMAS: tuple[type[BaseModel], ...] = (
    ImageReference, LegacyJsonBody, ObjectDetectionPrediction, ObjectDetectionResponse, ErrorResponse,
    ImageDimensions, InstanceSegmentationResponse, ClassificationResponse, MultiLabelClassificationResponse,
    ObjectDetectionInferenceRequest, InstanceSegmentationInferenceRequest, ClassificationInferenceRequest,
    KeypointsDetectionInferenceRequest, SemanticSegmentationInferenceRequest, KeypointsDetectionResponse,
    SemanticSegmentationResponse, ModelIdRequest, ModelsDescriptions)
ANY_TASK_RESPONSE = (ObjectDetectionResponse, InstanceSegmentationResponse, ClassificationResponse,
                     MultiLabelClassificationResponse, KeypointsDetectionResponse, SemanticSegmentationResponse)


def describe_validation_error(error: Any) -> str:
    """A one-line message naming each offending field, for pydantic ValidationErrors."""
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(piece) for piece in item.get("loc", ())) or "body"
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
