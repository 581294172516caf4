"""The generate_body JSON answer (:class:`GenerateBodyAnswer`), as :mod:`gen3d.sam3d_body.service` builds it;
``gen3d-schema --openapi`` publishes it. Frames: :data:`gen3d.sam3d_body.outputs.FRAMES`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gen3d.serving.answers import Answer, AnswerModel

Floats = list[float]
Point2 = Annotated[Floats, Field(min_length=2, max_length=2)]
Point3 = Annotated[Floats, Field(min_length=3, max_length=3)]
Box = Annotated[Floats, Field(min_length=4, max_length=4, description="[x0, y0, x1, y1] pixels")]
PersonOutput = Literal["glb", "params"]


class Camera(AnswerModel):
    focal_length: float | Floats = Field(description="pixels: the request's, or upstream's default (image diagonal)")
    translation: Point3 = Field(description="the person's place in the picture's camera (OpenCV axes, metres)")


class HandBoxes(AnswerModel):
    left: Box
    right: Box


class MeshSize(AnswerModel):
    vertices: int = Field(ge=0, description="18,439 for MHR")
    faces: int = Field(ge=0, description="36,874 for MHR")


class Person(AnswerModel):
    """One person, in the order of the request's boxes / masks."""

    index: int = Field(ge=0, description="the entry of boxes / masks it answers")
    box: Box
    keypoints_2d: list[Point2] = Field(min_length=70, max_length=70, description="MHR70 keypoints, image pixels")
    keypoints_3d: list[Point3] = Field(min_length=70, max_length=70, description="MHR70 keypoints, camera axes")
    camera: Camera
    global_rotation: Floats = Field(description="MHR root rotation, Euler ZYX radians")
    body_pose: Floats
    shape: Floats
    hand_pose: Floats
    scale: Floats
    hand_boxes: HandBoxes | None = Field(None, description="inference_type full: the hands' boxes")
    mesh: MeshSize
    outputs: dict[PersonOutput, str] | None = Field(None, description="S3 keys of person_<i>.glb and .json")
    outputs_base64: dict[PersonOutput, str] | None = Field(None, description="the files inline (no S3 asked)")


class GenerateBodyAnswer(Answer):
    """generate_body: every person as a posed MHR mesh (GLB, placed in the picture's camera turned to glTF's frame)
    with keypoints and parameters; people.glb with everyone placed; files in S3 under <prefix>/body/<id>/ or
    inline as base64."""

    task: Literal["generate_body"]
    generation_id: str = Field(description="names the output folder")
    preset: str = Field(description="sam3d-body-vith, sam3d-body-dinov3, or the demo tiny-cpu-demo")
    demo: bool = Field(description="true: random demo weights, the shape means nothing")
    inference_type: Literal["full", "body", "hand"]
    keypoint_names: list[str] = Field(min_length=70, max_length=70, description="MHR70 names, in keypoint order")
    people: list[Person]
    outputs: dict[Literal["people_glb"], str] | None = Field(None, description="S3 key of people.glb")
    output_bucket: str | None = None
    outputs_base64: dict[Literal["people_glb"], str] | None = Field(None, description="people.glb inline")
