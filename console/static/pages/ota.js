// OTA: campaigns in a list, image upload and the image list, and a new-campaign form. A new
// campaign opens on its own page, which shows the dry run before anything can be launched.

import { api } from "../api.js";
import {
  badge, clear, empty, errorBox, fmtNum, fmtTime, h, link, poll, section, table, toast,
} from "../ui.js";

const STATES = ["", "draft", "approved", "running", "paused", "completed", "aborted"];

function csv(value) {
  return String(value || "").split(",").map((v) => v.trim()).filter(Boolean);
}

function field(label, input, hint) {
  return [h("label", { for: input.id }, label), h("div", {}, input, hint ? h("div", { class: "muted" }, hint) : null)];
}

function campaignsSection() {
  const stateSelect = h("select", { id: "campaign-state-filter" },
    STATES.map((st) => h("option", { value: st }, st || "any state")));
  const body = h("div", {});
  async function refresh() {
    const rows = await api.get("/v1/ota/campaigns", { state: stateSelect.value, limit: 200 });
    clear(body).append(table([
      { label: "Campaign", value: (c) => link(`#/ota/campaigns/${c.id}`, c.name) },
      { label: "State", value: (c) => badge(c.state) },
      { label: "Wave", value: (c) => (c.state === "draft" || c.state === "approved" ? "–" : `${c.current_wave + 1} of ${c.waves.length}`) },
      { label: "Waves", value: (c) => c.waves.join(" → ") },
      { label: "Kind", value: (c) => c.update_kind },
      { label: "Created by", value: (c) => c.created_by },
      { label: "Approved by", value: (c) => c.approved_by || (c.requires_approval ? "pending" : "not needed") },
      { label: "Paused because", value: (c) => (c.pause_reason ? c.pause_reason.code : "") },
      { label: "Created", value: (c) => fmtTime(c.created_at) },
    ], rows, { emptyText: "No campaigns yet.", rowAttrs: (c) => ({ dataset: { campaign: c.id, state: c.state } }) }));
  }
  stateSelect.addEventListener("change", refresh);
  return { node: section("Campaigns", h("div", { class: "filters" }, stateSelect), body), refresh };
}

function imagesSection(onUploaded) {
  const list = h("div", {});
  const file = h("input", { id: "image-file", type: "file", required: true });
  const name = h("input", { id: "image-name", placeholder: "bms-firmware", required: true, maxlength: 100 });
  const version = h("input", { id: "image-version", placeholder: "4.3.0", required: true, maxlength: 64 });
  const counter = h("input", { id: "image-release-counter", type: "number", min: 0, value: 1, required: true });
  const hardware = h("input", { id: "image-hardware", placeholder: "BMS-HW-1, BMS-HW-2", required: true });
  const deps = h("input", { id: "image-dependencies", placeholder: "GW-HW-1:2.0.0 (optional)" });
  const submit = h("button", { type: "submit", id: "image-upload" }, "Upload and sign");
  const form = h("form", { class: "stack", id: "image-form" },
    field("Image file", file), field("Name", name), field("Version", version),
    field("Release counter", counter, "Anti-rollback: vehicles refuse a lower counter than they run."),
    field("Hardware ids", hardware, "Comma-separated ECU hardware ids it fits."),
    field("Dependencies", deps, "HARDWARE_ID:MIN_VERSION another ECU must already run."),
    h("div", { class: "full" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) { toast("Choose the image file first.", "error"); return; }
    submit.disabled = true;
    submit.textContent = "Uploading…";
    try {
      const image = await api.upload("/v1/ota/images", file.files[0], {
        name: name.value.trim(), version: version.value.trim(),
        release_counter: counter.value, hardware_id: csv(hardware.value), dependency: csv(deps.value),
      });
      toast(`Uploaded ${image.name} ${image.version} (${fmtNum(image.length)} bytes, sha256 ${image.sha256.slice(0, 12)}…)`, "ok");
      form.reset();
      counter.value = 1;
      await refresh();
      onUploaded(image);
    } catch (err) {
      toast(`Upload failed: ${err.message}`, "error");
    } finally {
      submit.disabled = false;
      submit.textContent = "Upload and sign";
    }
  });
  let images = [];
  async function refresh() {
    images = await api.get("/v1/ota/images", { limit: 200 });
    clear(list).append(table([
      { label: "Name", value: (i) => i.name },
      { label: "Version", value: (i) => i.version },
      { label: "Counter", value: (i) => i.release_counter, class: "num" },
      { label: "Hardware", value: (i) => i.hardware_ids.join(", ") },
      { label: "Size", value: (i) => fmtNum(i.length), class: "num" },
      { label: "sha256", value: (i) => h("span", { class: "mono", title: i.sha256 }, `${i.sha256.slice(0, 16)}…`) },
      { label: "Uploaded by", value: (i) => i.uploaded_by },
      { label: "Uploaded", value: (i) => fmtTime(i.created_at) },
    ], images, { emptyText: "No images yet: upload one." }));
    return images;
  }
  return {
    node: h("div", {}, section("Upload an image", form), section("Images", list)),
    refresh,
    images: () => images,
  };
}

function newCampaignSection(imagesOf) {
  const imageSelect = h("select", { id: "campaign-image", required: true });
  const name = h("input", { id: "campaign-name", required: true, maxlength: 200, placeholder: "BMS 4.3.0 EU" });
  const models = h("input", { id: "campaign-models", placeholder: "any model" });
  const regions = h("input", { id: "campaign-regions", placeholder: "any region" });
  const tags = h("input", { id: "campaign-tags", placeholder: "no tag needed" });
  const waves = h("input", { id: "campaign-waves", value: "5, 25%, 100%", required: true });
  const kind = h("select", { id: "campaign-kind" }, h("option", { value: "soft" }, "soft (driver consents)"), h("option", { value: "forced" }, "forced"));
  const minSoc = h("input", { id: "campaign-min-soc", type: "number", min: 0, max: 100, placeholder: "none" });
  const parked = h("input", { id: "campaign-parked", type: "checkbox" });
  const approval = h("input", { id: "campaign-approval", type: "checkbox", checked: true });
  const threshold = h("input", { id: "campaign-success-threshold", type: "number", step: "0.01", min: 0.01, max: 1, value: 0.95 });
  const maxFail = h("input", { id: "campaign-max-failure-rate", type: "number", step: "0.01", min: 0, max: 0.99, value: 0.05 });
  const submit = h("button", { type: "submit", id: "campaign-create" }, "Create draft and dry-run");
  const form = h("form", { class: "stack", id: "campaign-form" },
    field("Name", name), field("Image", imageSelect),
    field("Models", models, "Comma-separated; empty targets every model."),
    field("Regions", regions), field("Tags", tags, "A vehicle must carry all of them."),
    field("Waves", waves, "Cumulative targets, counts or percentages; the last must be 100%."),
    field("Update kind", kind),
    field("Preconditions", h("span", {}, minSoc, " % minimum state of charge ", parked, " parked")),
    field("Gate", h("span", {}, "success threshold ", threshold, " max failure rate ", maxFail)),
    field("Second approval", h("span", {}, approval, " required before launch (four eyes)")),
    h("div", { class: "full" }, submit));
  function fillImages() {
    const current = imageSelect.value;
    clear(imageSelect);
    for (const image of imagesOf()) {
      imageSelect.append(h("option", { value: image.id }, `${image.name} ${image.version} (counter ${image.release_counter})`));
    }
    if (current) imageSelect.value = current;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const preconditions = {};
    if (minSoc.value !== "") preconditions.min_soc_pct = Number(minSoc.value);
    if (parked.checked) preconditions.parked = true;
    const body = {
      name: name.value.trim(),
      image_id: imageSelect.value,
      target_filter: { models: csv(models.value), regions: csv(regions.value), tags: csv(tags.value) },
      waves: csv(waves.value),
      update_kind: kind.value,
      preconditions,
      requires_approval: approval.checked,
      gate: { success_threshold: Number(threshold.value), max_failure_rate: Number(maxFail.value) },
    };
    submit.disabled = true;
    try {
      const campaign = await api.post("/v1/ota/campaigns", body);
      toast(`Draft campaign ${campaign.name} created`, "ok");
      window.location.hash = `#/ota/campaigns/${campaign.id}`;
    } catch (err) {
      toast(`Not created: ${err.message}`, "error");
    } finally {
      submit.disabled = false;
    }
  });
  return { node: section("New campaign", form), fillImages, selectImage: (id) => { imageSelect.value = id; } };
}

export async function render(root, _params, ctx) {
  root.append(h("div", { class: "page-header" }, h("h1", {}, "OTA updates"),
    h("span", { class: "muted" }, "Signed images (Uptane: Image repository and Director), staged campaigns with gates.")));
  if (!["admin", "fleet_operator"].includes(ctx.session.principal.role)) {
    root.append(empty("OTA campaigns are run by fleet operators; your role cannot see them."));
    return undefined;
  }
  const campaigns = campaignsSection();
  let creator;
  const images = imagesSection((image) => { creator.fillImages(); creator.selectImage(image.id); });
  creator = newCampaignSection(images.images);
  root.append(campaigns.node, h("div", { class: "grid-2" }, creator.node, images.node));
  try {
    await images.refresh();
    creator.fillImages();
  } catch (err) {
    root.append(errorBox(err));
  }
  return poll(campaigns.refresh, 5000);
}
