// The collectives Proxima's data-parallel training uses, on libtorch's own c10d engine:
// TCPStore for the rendezvous and ProcessGroupGloo for all-reduce, all-gather and broadcast.
//
// Why a shim and how: libtorch_cpu.so exports both classes, but the wheel ships no Gloo headers,
// so ProcessGroupGloo.hpp cannot be included. Only two of its symbols are needed — the
// constructor and Options::create_default — and they are declared here by their mangled names
// with parameter types of the same ABI (every c10::intrusive_ptr is one pointer with a
// non-trivial destructor, whatever it points to). Everything else goes through c10d::Backend's
// virtual functions, whose header is shipped. The object is constructed in place in a buffer far
// larger than the class and handed to an intrusive_ptr exactly as c10::make_intrusive does.
//
// CUDA tensors go to a ProcessGroupNCCL when one was asked for. It lives in libtorch_cuda.so,
// which only a CUDA build of proxima loads, so its two symbols (the constructor and
// Options::Options(bool)) are looked up at run time with dlsym: a CPU build still links, and asking
// it for NCCL is a clear error. Every other tensor goes to Gloo.
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <ATen/ATen.h>

#include <dlfcn.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

// The mangled names and the object layout below are those of libtorch 2.11: another version must
// fail here, at compile time, not with an undefined symbol or a corrupted object at run time.
static_assert(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 11,
              "proxima-dist's shim calls c10d by the mangled names of libtorch 2.11; check them against this libtorch "
              "(scripts/setup-libtorch.sh installs 2.11) before changing this assertion");

using BackendOptionsPtr = c10::intrusive_ptr<c10d::Backend::Options>;

// c10d::ProcessGroupGloo::Options::create_default(std::chrono::milliseconds)
extern BackendOptionsPtr proxima_gloo_options_create_default(std::chrono::milliseconds timeout) __asm__(
    "_ZN4c10d16ProcessGroupGloo7Options14create_defaultENSt6chrono8durationIlSt5ratioILl1ELl1000EEEE");
// c10d::ProcessGroupGloo::ProcessGroupGloo(const intrusive_ptr<Store>&, int rank, int size, intrusive_ptr<Options>)
extern void proxima_gloo_construct(void* self, const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, BackendOptionsPtr options) __asm__(
    "_ZN4c10d16ProcessGroupGlooC1ERKN3c1013intrusive_ptrINS_5StoreENS1_6detail34intrusive_target_default_null_typeIS3_EEEEiiNS2_INS0_7OptionsENS5_ISA_EEEE");

// sizeof(c10d::ProcessGroupGloo) is about 1 KiB and ProcessGroupNCCL's a few KiB in libtorch
// 2.x; the buffers leave ample room.
static constexpr size_t kGlooObjectBytes = 64 * 1024;
static constexpr size_t kNcclObjectBytes = 256 * 1024;
static constexpr size_t kNcclOptionsBytes = 64 * 1024;

// c10d::ProcessGroupNCCL::Options::Options(bool is_high_priority_stream)
using NcclOptionsCtor = void (*)(void* self, bool high_priority_stream);
// c10d::ProcessGroupNCCL::ProcessGroupNCCL(intrusive_ptr<Store>, int rank, int size, intrusive_ptr<Options>)
using NcclCtor = void (*)(void* self, c10::intrusive_ptr<c10d::Store> store, int rank, int size, BackendOptionsPtr options);
static const char* kNcclOptionsCtor = "_ZN4c10d16ProcessGroupNCCL7OptionsC1Eb";
static const char* kNcclCtor =
    "_ZN4c10d16ProcessGroupNCCLC1EN3c1013intrusive_ptrINS_5StoreENS1_6detail34intrusive_target_default_null_typeIS3_EEEEiiNS2_INS0_7OptionsENS5_IS8_EEEE";

struct ProximaGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  c10::intrusive_ptr<c10d::Backend> nccl;  // null unless asked for
  int rank;
  int size;

  c10d::Backend& for_tensor(const at::Tensor& t) const {
    return (nccl && t.is_cuda()) ? *nccl : *backend;
  }
};

// Constructs an object of a class whose header is not available, in a buffer of `bytes`, with
// `construct(memory)`, and hands it to an intrusive_ptr as make_intrusive would. `Base` must be
// the class's first (only) base, so that the pointers coincide.
template <typename Base, typename F>
static c10::intrusive_ptr<Base> construct_in_place(size_t bytes, F&& construct) {
  void* memory = ::operator new(bytes);
  std::memset(memory, 0, bytes);
  try {
    construct(memory);
  } catch (...) {
    ::operator delete(memory);
    throw;
  }
  return c10::intrusive_ptr<Base>::unsafe_steal_from_new(static_cast<Base*>(memory));
}

static c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, int64_t timeout_ms) {
  auto options_ctor = reinterpret_cast<NcclOptionsCtor>(dlsym(RTLD_DEFAULT, kNcclOptionsCtor));
  auto ctor = reinterpret_cast<NcclCtor>(dlsym(RTLD_DEFAULT, kNcclCtor));
  if (!options_ctor || !ctor) {
    throw std::runtime_error(
        "NCCL is not available: libtorch_cuda.so (c10d::ProcessGroupNCCL) is not loaded; build proxima with --features cuda "
        "against a CUDA libtorch, or set PROXIMA_DIST_BACKEND=gloo to stage CUDA tensors through host memory");
  }
  auto options = construct_in_place<c10d::Backend::Options>(kNcclOptionsBytes, [&](void* m) { options_ctor(m, false); });
  options->timeout = std::chrono::milliseconds(timeout_ms);
  return construct_in_place<c10d::Backend>(kNcclObjectBytes, [&](void* m) { ctor(m, store, rank, size, options); });
}

static void set_error(char* err, size_t len, const char* what) {
  if (err && len > 0) {
    std::strncpy(err, what, len - 1);
    err[len - 1] = '\0';
  }
}

template <typename F>
static int guarded(char* err, size_t len, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, e.what());
  } catch (...) {
    set_error(err, len, "unknown C++ exception");
  }
  return 1;
}

static std::vector<at::Tensor> tensors_of(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

// Issuing a collective records it in c10d's FlightRecorder, one object for the whole process,
// and libtorch 2.11 inserts each group's status into that recorder's std::map before taking the
// recorder's lock (FlightRecorderDetail.hpp, recordWithResetEnabled). Two groups of one process
// issuing their first collectives at once (ranks on threads, as the tests and a process with
// several groups have) corrupt the map: a SIGSEGV in _Rb_tree_insert_and_rebalance, about one
// run in twenty. So every collective is issued under this lock; waiting for it is not, so ranks
// on threads still meet inside the collective.
static std::mutex issue_mutex;

// Issues the collective `issue(backend)` returns, under `issue_mutex` for Gloo, then waits for it
// outside the lock. NCCL is left unlocked: its first collective creates the communicator, which
// waits for every rank, so holding a process-wide lock there could deadlock ranks on threads.
template <typename F>
static void issue_and_wait(const ProximaGroup& group, c10d::Backend& backend, F&& issue) {
  c10::intrusive_ptr<c10d::Work> work;
  if (&backend == group.backend.get()) {
    std::lock_guard<std::mutex> lock(issue_mutex);
    work = issue(backend);
  } else {
    work = issue(backend);
  }
  work->wait();
}

extern "C" {

// Connects to (rank 0 with is_server: hosts) the TCPStore at host:port and joins a Gloo group.
// With use_nccl, CUDA tensors use a second group, ProcessGroupNCCL, over the same store.
ProximaGroup* proxima_dist_new(const char* host, int port, int rank, int size, int is_server, int use_nccl, int64_t timeout_ms, char* err, size_t err_len) {
  ProximaGroup* group = nullptr;
  guarded(err, err_len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(size);
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>("proxima/gloo/", tcp);
    BackendOptionsPtr options = proxima_gloo_options_create_default(std::chrono::milliseconds(timeout_ms));
    // ProcessGroupGloo derives from Backend alone, so the Backend subobject is at offset 0.
    auto backend = construct_in_place<c10d::Backend>(kGlooObjectBytes, [&](void* m) { proxima_gloo_construct(m, store, rank, size, options); });
    c10::intrusive_ptr<c10d::Backend> nccl;
    if (use_nccl) {
      c10::intrusive_ptr<c10d::Store> nccl_store = c10::make_intrusive<c10d::PrefixStore>("proxima/nccl/", tcp);
      nccl = make_nccl(nccl_store, rank, size, timeout_ms);
    }
    group = new ProximaGroup{store, backend, nccl, rank, size};
  });
  return group;
}

void proxima_dist_free(ProximaGroup* group) {
  delete group;
}

// In-place sum over all ranks of each tensor (one collective per tensor).
int proxima_dist_all_reduce_sum(ProximaGroup* group, at::Tensor** ts, size_t n, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    for (size_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      c10d::AllreduceOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;
      issue_and_wait(*group, group->for_tensor(*ts[i]), [&](c10d::Backend& b) { return b.allreduce(one, opts); });
    }
  });
}

// Copies `input` of every rank into outputs[rank] (each preallocated with input's shape).
int proxima_dist_all_gather(ProximaGroup* group, at::Tensor* input, at::Tensor** outputs, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<std::vector<at::Tensor>> out{tensors_of(outputs, static_cast<size_t>(group->size))};
    std::vector<at::Tensor> in{*input};
    issue_and_wait(*group, group->for_tensor(*input), [&](c10d::Backend& b) { return b.allgather(out, in, c10d::AllgatherOptions()); });
  });
}

// Overwrites each tensor with root's.
int proxima_dist_broadcast(ProximaGroup* group, at::Tensor** ts, size_t n, int root, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    for (size_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      issue_and_wait(*group, group->for_tensor(*ts[i]), [&](c10d::Backend& b) { return b.broadcast(one, opts); });
    }
  });
}

// 1 when CUDA tensors go to NCCL.
int proxima_dist_has_nccl(ProximaGroup* group) {
  return group->nccl ? 1 : 0;
}

int proxima_dist_barrier(ProximaGroup* group, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { issue_and_wait(*group, *group->backend, [](c10d::Backend& b) { return b.barrier(c10d::BarrierOptions()); }); });
}

}  // extern "C"
