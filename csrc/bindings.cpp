// bqnet_model._C: Python bindings of the csrc kernels. Every entry point releases the GIL for the
// whole call (arguments are converted with it held; the kernels touch no Python object), so a
// worker thread can segment while the main thread drives the GPU (Segmenter.prepare's overlap).

#include <torch/extension.h>

#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "bqnet_model C++ kernels (csrc/)";
  m.def("oversegment", &bqnet_sp::oversegment,
        "Superpoints of a point cloud: FH on its kNN graph; returns (labels int64 (N,), normals float32 (N, 3), "
        "stats float64 (15,)).",
        py::call_guard<py::gil_scoped_release>(), py::arg("xyz"), py::arg("rgb") = py::none(),
        py::arg("normals") = py::none(), py::arg("spacing"), py::arg("k_thresh"), py::arg("min_size"),
        py::arg("max_size"), py::arg("color_weight"), py::arg("offset_weight"), py::arg("knn"), py::arg("normal_knn"),
        py::arg("max_edge"), py::arg("normal_pick"), py::arg("refine_iters"), py::arg("refine_plane_weight"),
        py::arg("refine_color_weight"), py::arg("merge_plane_rms"), py::arg("merge_plane_cos"), py::arg("merge_color"),
        py::arg("merge_max_size"), py::arg("merge") = "fh", py::arg("num_threads"));
  m.def("oversegment_parallel", &bqnet_sp::oversegment_parallel,
        "The parallel port of oversegment (the CUDA build's kernels on the host backend; always the Boruvka "
        "merges); same arguments and outputs.",
        py::call_guard<py::gil_scoped_release>(), py::arg("xyz"), py::arg("rgb") = py::none(),
        py::arg("normals") = py::none(), py::arg("spacing"), py::arg("k_thresh"), py::arg("min_size"),
        py::arg("max_size"), py::arg("color_weight"), py::arg("offset_weight"), py::arg("knn"), py::arg("normal_knn"),
        py::arg("max_edge"), py::arg("normal_pick"), py::arg("refine_iters"), py::arg("refine_plane_weight"),
        py::arg("refine_color_weight"), py::arg("merge_plane_rms"), py::arg("merge_plane_cos"), py::arg("merge_color"),
        py::arg("merge_max_size"), py::arg("merge") = "boruvka", py::arg("num_threads"),
        py::arg("strict_memory") = false);
  m.def("segment_graph", &bqnet_sp::segment_graph,
        "FH on a weighted edge list; returns (labels int64 (V,), number of segments).",
        py::call_guard<py::gil_scoped_release>(), py::arg("a"), py::arg("b"), py::arg("w"), py::arg("num_nodes"),
        py::arg("k_thresh"), py::arg("min_size"), py::arg("num_threads"));
  m.def("segment_mesh", &bqnet_sp::segment_mesh,
        "ScanNet-style FH segmentation of a triangle mesh; returns (labels int64 (V,), number of segments).",
        py::call_guard<py::gil_scoped_release>(), py::arg("verts"), py::arg("faces"), py::arg("k_thresh"),
        py::arg("min_size"), py::arg("num_threads"));
}
