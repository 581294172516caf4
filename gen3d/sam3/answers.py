"""The sam3 tasks' JSON answers (:class:`GetEmbeddingAnswer`, :class:`SegmentAnswer`), as
:mod:`gen3d.sam3.service` builds them; ``gen3d-schema --openapi`` publishes them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gen3d.serving.answers import Answer, AnswerModel

Count = Annotated[int, Field(ge=0)]


class Sam3Answer(Answer):
    """What both sam3 tasks answer about the image's features."""

    embedding_id: str = Field(description="hash of the decoded pixels and the model id: a later segment's key")
    original_size: list[Count] = Field(min_length=2, max_length=2, description="[height, width], upright")
    cache_hit: bool = Field(description="the features came from the embedding cache")
    batch_size: int = Field(ge=1, description="requests answered in the same TorchServe batch")
    worker_pid: int
    output_bucket: str | None = Field(None, description="the bucket the outputs went to")


class GetEmbeddingAnswer(Sam3Answer):
    """get_embedding: the safetensors file in S3 (image sent by S3 key) or inline as base64. Sent with
    ``Accept: application/octet-stream``, the answer is the file itself instead."""

    task: Literal["get_embedding"]
    embedding_size_mb: float = Field(ge=0, description="size of the safetensors file")
    dtype: Literal["float16", "float32"]
    tensors: dict[str, list[Count]] = Field(description="each tensor's shape")
    resolution: int = Field(description="the model's input size in pixels")
    output_s3_key: str | None = Field(
        None, description="the file in S3: <prefix>/embeddings/<embedding_id>.safetensors"
    )
    embedding_base64: str | None = Field(None, description="the file inline (image sent inline)")


class MaskRle(AnswerModel):
    size: list[Count] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: str = Field(description="COCO's compressed RLE string (pycocotools mask.decode reads it)")


class Mask(AnswerModel):
    rle: MaskRle
    score: float = Field(description="concept: detection score; interactive: the predicted IoU")
    box: list[float] = Field(min_length=4, max_length=4, description="[x0, y0, x1, y1] original pixels")
    prompt_index: int = Field(ge=0, description="which box (or the points) this mask answers")
    area: Count = Field(description="pixels in the mask")
    png_s3_key: str | None = Field(None, description="the 1-bit PNG in S3 (return_png_masks)")


class SegmentAnswer(Sam3Answer):
    """segment: masks as COCO RLE, best first (interactive: per prompt)."""

    task: Literal["segment"]
    mode: Literal["concept", "interactive"]
    masks: list[Mask]
    masks_total: Count = Field(description="masks the prompts produced (concept: above score_threshold)")
    truncated: bool = Field(description="masks holds fewer than masks_total (max_masks, or the RLE bound)")
