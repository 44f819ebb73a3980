/* A fake libnvidia-ml.so: the NVML entry points nvml-wrapper 0.13 calls,
 * answering from `fake-nvml.script` in this library's own directory,
 * re-read on every call. See src/lib.rs for the script format. Only what
 * pinwheel's NvmlBackend uses is here; nvml-wrapper loads every other
 * symbol lazily and reports it missing only if called. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct fake_device *nvmlDevice_t;

enum {
    OK = 0,
    INVALID_ARGUMENT = 2,
    INSUFFICIENT_SIZE = 7,
    NOT_FOUND = 6,
};

#define MAX_GPUS 8
#define MAX_PROCS 16
#define MIB (1024ULL * 1024ULL)

struct proc { unsigned pid; unsigned long long mib; };

struct fake_device {
    int index;
    char name[96];
    char uuid[96];
    unsigned long long total_mib, used_mib;
    unsigned util, mem_util, temp, power_mw;
    int fail_util, fail_temp, fail_power, fail_procs, fail_all;
    int nprocs;
    struct proc procs[MAX_PROCS];
};

struct nvml_memory_v2 {
    unsigned version;
    unsigned long long total, reserved, free, used;
};
struct nvml_utilization { unsigned gpu, memory; };
struct nvml_process_info {
    unsigned pid;
    unsigned long long used_gpu_memory;
    unsigned gpu_instance_id, compute_instance_id;
};

static struct fake_device devices[MAX_GPUS];
static int device_count;
static int init_code;

static void script_path(char *out, size_t len) {
    Dl_info info;
    if (!dladdr((void *)script_path, &info) || !info.dli_fname) {
        snprintf(out, len, "fake-nvml.script");
        return;
    }
    snprintf(out, len, "%s", info.dli_fname);
    char *slash = strrchr(out, '/');
    if (slash) {
        slash[1] = '\0';
    } else {
        out[0] = '\0';
    }
    strncat(out, "fake-nvml.script", len - strlen(out) - 1);
}

static void set_fail(struct fake_device *d, const char *what, int code) {
    if (!strcmp(what, "util")) d->fail_util = code;
    else if (!strcmp(what, "temp")) d->fail_temp = code;
    else if (!strcmp(what, "power")) d->fail_power = code;
    else if (!strcmp(what, "procs")) d->fail_procs = code;
    else if (!strcmp(what, "all")) d->fail_all = code;
}

static void gpu_line(struct fake_device *d, const char *key, char *rest) {
    char what[16];
    int code;
    rest[strcspn(rest, "\r\n")] = '\0';
    if (!strcmp(key, "name")) snprintf(d->name, sizeof d->name, "%s", rest);
    else if (!strcmp(key, "uuid")) snprintf(d->uuid, sizeof d->uuid, "%s", rest);
    else if (!strcmp(key, "total")) d->total_mib = strtoull(rest, NULL, 10);
    else if (!strcmp(key, "used")) d->used_mib = strtoull(rest, NULL, 10);
    else if (!strcmp(key, "util")) sscanf(rest, "%u %u", &d->util, &d->mem_util);
    else if (!strcmp(key, "temp")) d->temp = (unsigned)strtoul(rest, NULL, 10);
    else if (!strcmp(key, "power")) d->power_mw = (unsigned)strtoul(rest, NULL, 10);
    else if (!strcmp(key, "proc") && d->nprocs < MAX_PROCS) {
        struct proc *p = &d->procs[d->nprocs];
        if (sscanf(rest, "%u %llu", &p->pid, &p->mib) == 2) d->nprocs++;
    } else if (!strcmp(key, "fail") && sscanf(rest, "%15s %d", what, &code) == 2) {
        set_fail(d, what, code);
    }
}

static void load_script(void) {
    char path[4096];
    char line[512];
    script_path(path, sizeof path);
    memset(devices, 0, sizeof devices);
    device_count = 0;
    init_code = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        int index, offset = 0;
        char key[32];
        if (sscanf(line, "init %d", &init_code) == 1) continue;
        if (sscanf(line, "gpu %d %31s %n", &index, key, &offset) < 2) continue;
        if (index < 0 || index >= MAX_GPUS) continue;
        if (index + 1 > device_count) device_count = index + 1;
        devices[index].index = index;
        gpu_line(&devices[index], key, line + offset);
    }
    fclose(f);
}

/* The device a handle names, with the script re-read; NULL if invalid. */
static struct fake_device *device(nvmlDevice_t handle) {
    if (!handle) return NULL;
    int index = handle->index;
    load_script();
    if (index < 0 || index >= device_count) return NULL;
    return &devices[index];
}

nvmlReturn_t nvmlInit_v2(void) {
    load_script();
    return init_code;
}

nvmlReturn_t nvmlInitWithFlags(unsigned flags) {
    (void)flags;
    return nvmlInit_v2();
}

nvmlReturn_t nvmlShutdown(void) { return OK; }

const char *nvmlErrorString(nvmlReturn_t code) {
    switch (code) {
    case 0: return "Success";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *count) {
    load_script();
    if (!count) return INVALID_ARGUMENT;
    *count = (unsigned)device_count;
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t *handle) {
    load_script();
    if (!handle || index >= (unsigned)device_count) return INVALID_ARGUMENT;
    *handle = &devices[index];
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *handle) {
    load_script();
    if (!uuid || !handle) return INVALID_ARGUMENT;
    for (int i = 0; i < device_count; i++) {
        if (!strcmp(devices[i].uuid, uuid)) {
            *handle = &devices[i];
            return OK;
        }
    }
    return NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t handle, unsigned *index) {
    struct fake_device *d = device(handle);
    if (!d || !index) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    *index = (unsigned)d->index;
    return OK;
}

static nvmlReturn_t copy_string(const char *value, char *out, unsigned len) {
    if (!out || strlen(value) + 1 > len) return INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return OK;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t handle, char *name, unsigned len) {
    struct fake_device *d = device(handle);
    if (!d) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    return copy_string(d->name, name, len);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t handle, char *uuid, unsigned len) {
    struct fake_device *d = device(handle);
    if (!d) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    return copy_string(d->uuid, uuid, len);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t handle, struct nvml_memory_v2 *memory) {
    struct fake_device *d = device(handle);
    if (!d || !memory) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    unsigned long long used = d->used_mib < d->total_mib ? d->used_mib : d->total_mib;
    memory->total = d->total_mib * MIB;
    memory->reserved = 0;
    memory->used = used * MIB;
    memory->free = (d->total_mib - used) * MIB;
    return OK;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t handle, struct nvml_utilization *util) {
    struct fake_device *d = device(handle);
    if (!d || !util) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    if (d->fail_util) return d->fail_util;
    util->gpu = d->util;
    util->memory = d->mem_util;
    return OK;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t handle, int sensor, unsigned *temp) {
    struct fake_device *d = device(handle);
    if (!d || !temp || sensor != 0) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    if (d->fail_temp) return d->fail_temp;
    *temp = d->temp;
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t handle, unsigned *power_mw) {
    struct fake_device *d = device(handle);
    if (!d || !power_mw) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    if (d->fail_power) return d->fail_power;
    *power_mw = d->power_mw;
    return OK;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t handle, unsigned *count,
                                                     struct nvml_process_info *infos) {
    struct fake_device *d = device(handle);
    if (!d || !count) return INVALID_ARGUMENT;
    if (d->fail_all) return d->fail_all;
    if (d->fail_procs) return d->fail_procs;
    unsigned n = (unsigned)d->nprocs;
    if (!infos || *count < n) {
        *count = n;
        return n ? INSUFFICIENT_SIZE : OK;
    }
    for (unsigned i = 0; i < n; i++) {
        infos[i].pid = d->procs[i].pid;
        infos[i].used_gpu_memory = d->procs[i].mib * MIB;
        infos[i].gpu_instance_id = 0xFFFFFFFFu;
        infos[i].compute_instance_id = 0xFFFFFFFFu;
    }
    *count = n;
    return OK;
}
