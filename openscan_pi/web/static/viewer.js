// The job's model, turning: three.js from the system's libjs-three (served under /three/).
import * as THREE from "/three/build/three.module.js";
import { OrbitControls } from "/three/examples/jsm/controls/OrbitControls.js";
import { OBJLoader } from "/three/examples/jsm/loaders/OBJLoader.js";
import { MTLLoader } from "/three/examples/jsm/loaders/MTLLoader.js";

const canvas = document.getElementById("viewer");
const objUrl = canvas.dataset.obj;
const base = objUrl.slice(0, objUrl.lastIndexOf("/") + 1);

const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
renderer.setClearColor(0x20252b);
const scene = new THREE.Scene();
scene.add(new THREE.AmbientLight(0xffffff, 0.6));
const sun = new THREE.DirectionalLight(0xffffff, 0.6);
sun.position.set(1, 2, 3);
scene.add(sun);
const camera = new THREE.PerspectiveCamera(40, canvas.width / canvas.height, 0.01, 1000);
const controls = new OrbitControls(camera, canvas);
controls.autoRotate = true;
controls.enableDamping = true;

function frame(object) {
  const box = new THREE.Box3().setFromObject(object);
  const size = box.getSize(new THREE.Vector3()).length() || 1;
  const centre = box.getCenter(new THREE.Vector3());
  controls.target.copy(centre);
  camera.position.copy(centre).add(new THREE.Vector3(0, size * 0.3, size * 1.2));
  camera.near = size / 100; camera.far = size * 100;
  camera.updateProjectionMatrix();
}

function show(object) {
  scene.add(object);
  frame(object);
  canvas.dataset.loaded = "yes";
}

function fail(e) {
  canvas.dataset.loaded = "failed";
  const m = document.getElementById("message");
  m.textContent = "cannot show the model: " + (e && e.message ? e.message : e);
  m.className = "error";
}

async function load() {
  const text = await (await fetch(objUrl, { credentials: "same-origin" })).text();
  const mtl = /^mtllib\s+(\S+)/m.exec(text);
  const objLoader = new OBJLoader();
  if (mtl) {
    const materials = await new Promise((ok, no) =>
      new MTLLoader().setPath(base).load(mtl[1], ok, undefined, no));
    materials.preload();
    objLoader.setMaterials(materials);
  }
  show(objLoader.parse(text));
}

load().catch(fail);

(function tick() {
  controls.update();
  renderer.render(scene, camera);
  requestAnimationFrame(tick);
})();
