// The generate_3d mesh (GLB, Y up, vertex colours) in a three.js view you can orbit; renders on demand.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { RoomEnvironment } from "three/addons/environments/RoomEnvironment.js";
import { GLTFExporter } from "three/addons/exporters/GLTFExporter.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    // preserveDrawingBuffer: the drawn frame stays readable (screenshots, the browser test)
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(window.devicePixelRatio);
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0x20242b);
    // A neutral room as the environment, as glTF viewers use: the GLB carries no material, and glTF's default
    // material is fully metallic, which shows black under lights alone.
    this.scene.environment = new THREE.PMREMGenerator(this.renderer).fromScene(new RoomEnvironment(), 0.04).texture;
    this.camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
    this.camera.position.set(0, 0.4, 2);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.addEventListener("change", () => this.render());
    this.object = null;
    this.renders = 0; // frames drawn: read by the browser test
    this.vertices = 0; // vertices of the mesh shown
    this.keypoints = 0; // keypoints shown with it
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  resize() {
    const { clientWidth: w, clientHeight: h } = this.canvas;
    if (!w || !h) return;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() {
    this.renderer.render(this.scene, this.camera);
    this.renders++;
  }

  /** Shows a GLB (ArrayBuffer), centred, the camera fitted to it; ``keypoints`` ([[x, y, z], ...] in the GLB's
   * frame) are drawn with it as points. */
  async show(glb, keypoints = []) {
    const gltf = await new GLTFLoader().parseAsync(glb, "");
    if (this.object) this.scene.remove(this.object);
    this.object = gltf.scene;
    this.keypoints = keypoints.length;
    if (keypoints.length) {
      const geometry = new THREE.BufferGeometry().setAttribute(
        "position",
        new THREE.Float32BufferAttribute(keypoints.flat(), 3),
      );
      const material = new THREE.PointsMaterial({ color: 0xffd400, size: 6, sizeAttenuation: false });
      this.object.add(new THREE.Points(geometry, material));
    }
    this.vertices = 0;
    this.object.traverse((node) => {
      if (node.isMesh) {
        this.vertices += node.geometry.attributes.position.count;
        node.material.side = THREE.DoubleSide;
      }
    });
    const box = new THREE.Box3().setFromObject(this.object);
    const centre = box.getCenter(new THREE.Vector3());
    const radius = box.getSize(new THREE.Vector3()).length() / 2 || 1;
    this.object.position.sub(centre);
    this.scene.add(this.object);
    this.camera.position.set(0, radius * 0.6, radius * 2.6);
    this.camera.near = radius / 100;
    this.camera.far = radius * 100;
    this.camera.updateProjectionMatrix();
    this.controls.target.set(0, 0, 0);
    this.controls.update();
    this.render();
  }

  /** The mesh of the shown GLB's node ``name`` as a GLB of its own, in the node's own frame (its placement left
   * out): a scene's object as its object GLB has it. */
  async nodeGlb(name) {
    const node = this.object?.getObjectByName(name);
    if (!node) return null;
    const copy = node.clone();
    copy.position.set(0, 0, 0);
    copy.quaternion.identity();
    copy.scale.set(1, 1, 1);
    return new GLTFExporter().parseAsync(copy, { binary: true });
  }
}
