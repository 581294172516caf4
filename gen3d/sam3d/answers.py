"""The generate_3d JSON answer (:class:`Generate3dAnswer`), as :mod:`gen3d.sam3d.service` builds it;
``gen3d-schema --openapi`` publishes it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gen3d.serving.answers import Answer, AnswerModel

Vector3 = Annotated[list[float], Field(min_length=3, max_length=3)]
Count = Annotated[int, Field(ge=0)]
OutputName = Literal["ply", "glb", "pose"]


class Pose(AnswerModel):
    """The object's pose in the PyTorch3D camera of the picture: p_camera = (scale * p_object) @ R + translation."""

    rotation: list[float] = Field(min_length=4, max_length=4, description="unit quaternion w, x, y, z")
    translation: Vector3
    scale: Vector3 = Field(description="isotropic: three equal values")


class Steps(AnswerModel):
    sparse_structure: int = Field(ge=1, description="stage-1 flow steps taken")
    slat: int = Field(ge=1, description="stage-2 flow steps taken")


class MeshSize(AnswerModel):
    vertices: Count
    faces: Count


class Generate3dAnswer(Answer):
    """generate_3d: the files in S3 (``outputs``: keys under <prefix>/3d/<generation_id>/) or inline as base64
    (``outputs_base64``), the pose, and what the run did."""

    task: Literal["generate_3d"]
    generation_id: str = Field(description="names the output folder; pose.json (the manifest) lists its files")
    preset: str = Field(description="the preset that answered (sam3d-objects, or the demo tiny-cpu-demo)")
    demo: bool = Field(description="true: random demo weights, the shape means nothing")
    seed: int
    pose: Pose
    decode_formats: list[Literal["gaussian", "mesh"]]
    mesh_postprocess: bool
    texture_baking: bool
    voxels: Count = Field(description="occupied voxels of the sparse structure")
    steps: Steps
    mesh_extracted: bool | None = Field(description="the mesh decoder found a surface (null: no mesh asked)")
    gpu_peak_mib: dict[str, float] | None = Field(None, description="GPU preset: peak GPU memory per stage")
    gaussians: Count | None = Field(None, description="Gaussians in the splat")
    mesh: MeshSize | None = None
    sizes_mb: dict[OutputName, float] = Field(description="size of each file")
    outputs: dict[OutputName, str] | None = Field(None, description="S3 keys of object.ply, object.glb, pose.json")
    output_bucket: str | None = None
    outputs_base64: dict[OutputName, str] | None = Field(None, description="the files inline (no S3 asked)")
