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


class Generated(AnswerModel):
    """What one object's generation reports (the whole answer of one object; each entry of a scene)."""

    pose: Pose
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


class Generation3d(AnswerModel):
    """What every generate_3d answer says about the run."""

    generation_id: str = Field(description="names the output folder; pose.json (the manifest) lists its files")
    preset: str = Field(description="the preset that answered (sam3d-objects, or the demo tiny-cpu-demo)")
    demo: bool = Field(description="true: random demo weights, the shape means nothing")
    seed: int
    decode_formats: list[Literal["gaussian", "mesh"]]
    mesh_postprocess: bool
    texture_baking: bool


class Generate3dAnswer(Generated, Generation3d, Answer):
    """generate_3d of one object (a mask field): the files in S3 (``outputs``: keys under
    <prefix>/3d/<generation_id>/) or inline as base64 (``outputs_base64``), the pose, and what the run did."""

    task: Literal["generate_3d"]


class ObjectTimings(AnswerModel):
    generate: float = Field(ge=0)
    stages: dict[str, float] | None = None


class ObjectError(AnswerModel):
    code: int
    type: str
    field: str | None = Field(description="masks[i]: the object's mask")
    message: str


class SceneObject(Generated):
    """One object of a scene: its own answer (or its error; the scene's other objects go on)."""

    index: Count = Field(description="the entry of masks it answers")
    seed: int = Field(description="the request's seed + index")
    status: Literal["success"]
    timings_ms: ObjectTimings


class FailedSceneObject(AnswerModel):
    index: Count
    seed: int
    status: Literal["error"]
    error: ObjectError
    timings_ms: ObjectTimings


SceneOutput = Literal["scene_glb", "scene_ply"]


class Generate3dSceneAnswer(Generation3d, Answer):
    """generate_3d of several objects (``masks``): each object's answer (files under objects/<i>/ unless
    object_files is false) and scene.glb / scene.ply with every object placed by its pose."""

    task: Literal["generate_3d"]
    object_files: bool
    objects: list[SceneObject | FailedSceneObject]
    outputs: dict[SceneOutput, str] | None = Field(None, description="S3 keys of scene.glb and scene.ply")
    output_bucket: str | None = None
    outputs_base64: dict[SceneOutput, str] | None = Field(None, description="the scene's files inline")
