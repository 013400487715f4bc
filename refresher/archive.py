"""The ZIP of a job's outputs, streamed with zipstream-ng.

Entries are STOREd (H.264 does not compress further), so the archive's exact
size is known before the first byte is sent (`Content-Length`) and memory
stays constant whatever the size. One folder per source video, named after
the source without its extension, and a `manifest.json` describing every
output. Every path in it extracts on Windows, macOS and Linux alike, and no
two sources share a folder there, even where case is ignored.
"""

from __future__ import annotations

import json

from zipstream import ZIP_STORED, ZipStream

from .storage import Storage
from .names import content_disposition as disposition_header
from .names import name_from_files, safe_stem, same_on_disk, strip_invisible, zip_folder_name

MANIFEST = "manifest.json"


def folder_names(files: list[dict]) -> dict[str, str]:
    """file id → its folder: the source's name without its extension, made
    portable (see `names.zip_folder_name`), and distinct from every other
    folder and from the manifest as Windows and macOS compare names. A source
    keeps its own name where it can: "a (2).mp4" gets "a (2)", and a second
    "a.mp4" then gets "a (3)"."""
    natural = {f["id"]: zip_folder_name(f["name"]) for f in files}
    wanted = {same_on_disk(name) for name in natural.values()}
    used = {same_on_disk(MANIFEST)}
    names = {}
    for f in files:
        folder, count = natural[f["id"]], 1
        while same_on_disk(folder) in used or (count > 1 and same_on_disk(folder) in wanted):
            count += 1
            folder = zip_folder_name(f["name"], suffix=f" ({count})")
        used.add(same_on_disk(folder))
        names[f["id"]] = folder
    return names


def build_zip(storage: Storage, job: dict, files: list[dict], variations: list[dict]) -> ZipStream:
    """Each output is read from the storage as the ZIP is sent; its size
    (from the database) makes the archive's length known up front."""
    folders = folder_names(files)
    by_id = {f["id"]: f for f in files}
    zs = ZipStream(compress_type=ZIP_STORED, sized=True)
    manifest = {
        "jobId": job["id"],
        "name": job["name"] or name_from_files([f["name"] for f in files]),
        "seed": job["seed"],
        "status": job["status"],
        "outputs": [],
    }
    for v in variations:
        if v["status"] != "completed":
            continue
        source = by_id[v["file_id"]]
        arcname = f"{folders[source['id']]}/{v['name']}"
        zs.add(storage.chunks(v["output_path"]), arcname, size=v["size"])
        manifest["outputs"].append(
            {
                "path": arcname,
                "id": v["id"],
                "source": strip_invisible(source["name"]),
                "sourceId": source["id"],
                "variationIndex": v["variation_index"],
                "size": v["size"],
                "effects": v["effects"],
            }
        )
    zs.add(json.dumps(manifest, indent=2, ensure_ascii=False).encode(), MANIFEST)
    return zs


def zip_file_name(job: dict) -> str:
    """The ZIP's name: after the job's given name, else after its id."""
    if job["name"]:
        return f"{safe_stem(job['name'] + '.zip')}.zip"
    return f"refresher-{job['id']}.zip"


def content_disposition(job: dict) -> str:
    """The ZIP's name, for every client (see `names.content_disposition`)."""
    return disposition_header(zip_file_name(job), "attachment", f"refresher-{job['id']}")
