// cnidriver: a small cnitool-like CNI runtime built on libcni (containernetworking/cni 1.1.2).
//
// Usage:
//
//	cnidriver add|check|del <conflist-file> <netns-path>
//	cnidriver validate <conflist-file>
//	cnidriver version <plugin-type>
//	cnidriver gc <conflist-file> [<valid-attachments-json>]
//	cnidriver status <conflist-file>
//
// Environment: CNI_PATH (plugin search path, required), CNI_IFNAME (default eth0),
// CNI_CONTAINERID (default derived from the netns path), CNI_ARGS ("K=V;K=V"),
// CAP_ARGS (JSON object of capability args, e.g. {"portMappings":[...]}),
// CNI_CACHE_DIR (libcni result cache; default $TMPDIR/cnidriver-cache, never /var/lib/cni).
//
// libcni 1.1.2 knows spec versions up to 1.0.0 and has no GC/STATUS API: gc and status are
// implemented here by executing each plugin of the list through libcni's invoke package
// (invoke.ExecPluginWithoutResult + invoke.RawExec) with CNI_COMMAND=GC/STATUS, the
// per-plugin config built like libcni does (name + cniVersion injected) and, for GC,
// "cni.dev/valid-attachments" as defined by CNI spec 1.1.0.
//
// Built with -ldflags "-X main.personality=cnitool" (make cnitool -> build/cnitool) the same
// binary is a cnitool with the usual command line:
//
//	cnitool add|check|del <network-name> <netns-path>
//	cnitool gc <network-name> [<netns-path>]   (that netns's attachment is kept, all else is stale)
//	cnitool status <network-name>
//
// It loads the conflist whose "name" is <network-name> from NETCONFPATH (default
// /etc/cni/net.d) and honours CNI_PATH, CNI_ARGS, CAP_ARGS, CNI_IFNAME and CNI_CACHE_DIR as
// above; the container id is "cnitool-" + a hash of the netns path (CNI_CONTAINERID overrides).
//
// Output: add prints the result JSON (as parsed and re-encoded by libcni); validate prints the
// capability list; version prints the plugin's version info. On failure a JSON error object
// {"code":N,"msg":...,"details":...,"source":"plugin"|"driver"} is printed on stdout and the
// exit status is 1 (plugin error, i.e. *types.Error from libcni) or 2 (driver/libcni error).
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

const timeout = 60 * time.Second

// personality is "cnidriver" (the conformance suite's driver) or "cnitool" (set at link time).
var personality = "cnidriver"

type failure struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
	Source  string `json:"source"`
}

func fail(err error) {
	var perr *types.Error
	out := failure{Msg: err.Error(), Source: "driver"}
	status := 2
	if errors.As(err, &perr) {
		out = failure{Code: perr.Code, Msg: perr.Msg, Details: perr.Details, Source: "plugin"}
		status = 1
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	os.Exit(status)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cnidriver add|check|del <conflist> <netns> | validate <conflist> |"+
		" version <type> | gc <conflist> [<valid-attachments-json>] | status <conflist>")
	os.Exit(2)
}

func cniPath() []string {
	p := os.Getenv("CNI_PATH")
	if p == "" {
		fail(errors.New("CNI_PATH must be set"))
	}
	return filepath.SplitList(p)
}

func cacheDir() string {
	d := os.Getenv("CNI_CACHE_DIR")
	if d == "" {
		d = filepath.Join(os.TempDir(), "cnidriver-cache")
	}
	return d
}

func loadList(path string) *libcni.NetworkConfigList {
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		fail(fmt.Errorf("loading conflist %s: %w", path, err))
	}
	return list
}

func ifName() string {
	if ifname := os.Getenv("CNI_IFNAME"); ifname != "" {
		return ifname
	}
	return "eth0"
}

func containerID(netns string) string {
	if cid := os.Getenv("CNI_CONTAINERID"); cid != "" {
		return cid
	}
	prefix := personality + "-"
	return fmt.Sprintf("%s%x", prefix, sha512.Sum512([]byte(netns)))[:len(prefix)+20]
}

func runtimeConf(netns string) *libcni.RuntimeConf {
	ifname := ifName()
	cid := containerID(netns)
	rt := &libcni.RuntimeConf{ContainerID: cid, NetNS: netns, IfName: ifname}
	if a := os.Getenv("CNI_ARGS"); a != "" {
		for _, kv := range strings.Split(a, ";") {
			parts := strings.SplitN(kv, "=", 2)
			if len(parts) != 2 {
				fail(fmt.Errorf("invalid CNI_ARGS pair %q", kv))
			}
			rt.Args = append(rt.Args, [2]string{parts[0], parts[1]})
		}
	}
	if c := os.Getenv("CAP_ARGS"); c != "" {
		if err := json.Unmarshal([]byte(c), &rt.CapabilityArgs); err != nil {
			fail(fmt.Errorf("invalid CAP_ARGS: %w", err))
		}
	}
	return rt
}

// minimalArgs is the environment for GC and STATUS: only CNI_COMMAND and CNI_PATH (spec 1.1.0).
type minimalArgs struct {
	command string
	path    string
}

func (a *minimalArgs) AsEnv() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CNI_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "CNI_COMMAND="+a.command, "CNI_PATH="+a.path)
}

// pluginConf builds one plugin's stdin like libcni's buildOneConfig: name + cniVersion injected.
func pluginConf(list *libcni.NetworkConfigList, net *libcni.NetworkConfig,
	extra map[string]interface{}) []byte {
	var raw map[string]interface{}
	if err := json.Unmarshal(net.Bytes, &raw); err != nil {
		fail(fmt.Errorf("plugin config: %w", err))
	}
	raw["name"] = list.Name
	raw["cniVersion"] = list.CNIVersion
	for k, v := range extra {
		raw[k] = v
	}
	b, err := json.Marshal(raw)
	if err != nil {
		fail(err)
	}
	return b
}

// rawExec is libcni's default exec (RawExec + version decoder), which invoke does not export.
type rawExec struct {
	*invoke.RawExec
	version.PluginDecoder
}

// execEach runs command against every plugin of the list, in order, stopping at the first error.
func execEach(ctx context.Context, command string, list *libcni.NetworkConfigList, paths []string,
	extra map[string]interface{}) {
	exec := &rawExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	for _, net := range list.Plugins {
		pluginPath, err := exec.FindInPath(net.Network.Type, paths)
		if err != nil {
			fail(err)
		}
		args := &minimalArgs{command: command, path: strings.Join(paths, string(os.PathListSeparator))}
		conf := pluginConf(list, net, extra)
		if err := invoke.ExecPluginWithoutResult(ctx, pluginPath, conf, args, exec); err != nil {
			fail(err)
		}
	}
}

// runList runs add, check or del of a whole list; add prints the result (indented for a
// person when indent is set, one line for the suite).
func runList(ctx context.Context, cninet *libcni.CNIConfig, cmd string, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, indent string) {
	switch cmd {
	case "add":
		result, err := cninet.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		var b []byte
		if indent != "" {
			b, err = json.MarshalIndent(result, "", indent)
		} else {
			b, err = json.Marshal(result)
		}
		if err != nil {
			fail(err)
		}
		fmt.Println(string(b))
	case "check":
		if err := cninet.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	}
}

// cnitool: the network is named, its conflist looked up in NETCONFPATH.
func cnitool() {
	if len(os.Args) < 3 {
		cnitoolUsage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	confDir := os.Getenv("NETCONFPATH")
	if confDir == "" {
		confDir = "/etc/cni/net.d"
	}
	list, err := libcni.LoadConfList(confDir, os.Args[2])
	if err != nil {
		fail(fmt.Errorf("loading network %q from %s: %w", os.Args[2], confDir, err))
	}
	paths := cniPath()
	cninet := libcni.NewCNIConfigWithCacheDir(paths, cacheDir(), nil)
	switch cmd := os.Args[1]; cmd {
	case "add", "check", "del":
		if len(os.Args) != 4 {
			cnitoolUsage()
		}
		netns, err := filepath.Abs(os.Args[3])
		if err != nil {
			fail(err)
		}
		runList(ctx, cninet, cmd, list, runtimeConf(netns), "    ")
	case "gc":
		valid := []interface{}{}
		if len(os.Args) == 4 {
			netns, err := filepath.Abs(os.Args[3])
			if err != nil {
				fail(err)
			}
			valid = append(valid, map[string]string{"containerID": containerID(netns), "ifname": ifName()})
		} else if len(os.Args) != 3 {
			cnitoolUsage()
		}
		execEach(ctx, "GC", list, paths, map[string]interface{}{"cni.dev/valid-attachments": valid})
	case "status":
		if len(os.Args) != 3 {
			cnitoolUsage()
		}
		execEach(ctx, "STATUS", list, paths, nil)
	default:
		cnitoolUsage()
	}
}

func cnitoolUsage() {
	fmt.Fprintln(os.Stderr, "usage: cnitool add|check|del <network-name> <netns-path>\n"+
		"       cnitool gc <network-name> [<netns-path>]\n"+
		"       cnitool status <network-name>\n"+
		"env: NETCONFPATH (default /etc/cni/net.d), CNI_PATH (required), CNI_IFNAME (default eth0),\n"+
		"     CNI_ARGS (K=V;K=V), CAP_ARGS (JSON), CNI_CACHE_DIR (default $TMPDIR/cnidriver-cache),\n"+
		"     CNI_CONTAINERID (default cnitool-<hash of the netns path>)")
	os.Exit(2)
}

func main() {
	if personality == "cnitool" {
		cnitool()
		return
	}
	if len(os.Args) < 3 {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := os.Args[1]
	paths := cniPath()
	cninet := libcni.NewCNIConfigWithCacheDir(paths, cacheDir(), nil)

	switch cmd {
	case "add", "check", "del":
		if len(os.Args) != 4 {
			usage()
		}
		runList(ctx, cninet, cmd, loadList(os.Args[2]), runtimeConf(os.Args[3]), "")
	case "validate":
		caps, err := cninet.ValidateNetworkList(ctx, loadList(os.Args[2]))
		if err != nil {
			fail(err)
		}
		sort.Strings(caps)
		b, _ := json.Marshal(caps)
		fmt.Println(string(b))
	case "version":
		info, err := cninet.GetVersionInfo(ctx, os.Args[2])
		if err != nil {
			fail(err)
		}
		b, _ := json.Marshal(map[string]interface{}{"supportedVersions": info.SupportedVersions()})
		fmt.Println(string(b))
	case "gc":
		list := loadList(os.Args[2])
		valid := []interface{}{}
		if len(os.Args) > 3 {
			if err := json.Unmarshal([]byte(os.Args[3]), &valid); err != nil {
				fail(fmt.Errorf("invalid valid-attachments JSON: %w", err))
			}
		}
		execEach(ctx, "GC", list, paths, map[string]interface{}{"cni.dev/valid-attachments": valid})
	case "status":
		execEach(ctx, "STATUS", loadList(os.Args[2]), paths, nil)
	default:
		usage()
	}
}
